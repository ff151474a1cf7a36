"""Lottery-ticket experiments (iterative magnitude pruning and its analyses) as library
functions that the Snakemake workflow's rules call. One module per concept:
config (schema + defaults), plan (stage IDs), data, models, pruning, masks, training,
stages (what each rule runs), summary, cli."""
__version__ = "0.1.0"
