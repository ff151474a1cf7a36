"""Lottery-ticket experiments (iterative magnitude pruning and its analyses) as library
functions that the Snakemake workflow's rules call, in layers:

- plan/     torch-free, read at parse time: the config (schema, checks, files), the
            declarations (models, strategies, execution keys, the stage-kind registry),
            stage IDs, the plan of an experiment and its cluster job groups;
- stages/   one module per stage kind: its declaration, planner and runner;
- nn/       what jobs compute with: models, datasets, training, pruning, perturbations,
            devices, numerics, checkpoints;
- store/    file formats and their integrity: packed weights, masks, starts, records, verify;
- report/   summaries, verdicts, plots, the analyses' arithmetic and the catalog;
- runtime/  one job's life: its manifest, start-up, lock and scheduler;
- cli.py    `python -m lth ...`.
"""
__version__ = "0.1.0"
