# Lottery-ticket workflow: init -> train -> prune -> rewind over levels of iterative
# magnitude pruning. Every stage's directory is named by a hash of the settings it consumes
# and its upstream IDs (see src/lth/stage_ids.py), so an edit reruns only what it changes.
# Parse time stays cheap: nothing here imports torch.
import sys
from pathlib import Path

# Parse time imports lth from src/ (config and plan only: no torch). Jobs run
# `python -m lth` with the python first on PATH: the project venv (activate it, or use make).
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from lth import config as lth_config, data as lth_data, devices as lth_devices, plan as lth_plan


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


try:
    _validated = lth_config.validate(config)
except lth_config.ConfigError as _error:
    sys.exit(str(_error))
config.clear()
config.update(_validated)
for _note in lth_config.notes(config):
    print(_note, file=sys.stderr)

PLAN = lth_plan.build(config)


include: "workflow/rules/common.smk"
include: "workflow/rules/init.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/snapshot.smk"
include: "workflow/rules/prune.smk"
include: "workflow/rules/rewind.smk"
include: "workflow/rules/controls.smk"
include: "workflow/rules/perturb.smk"
include: "workflow/rules/instability.smk"
include: "workflow/rules/summary.smk"
include: "workflow/rules/analysis.smk"


rule all:
    input:
        PLAN.targets(),
    default_target: True


# Stop before any job runs when the dataset is missing and some stage still has to read it
# (a dry run and a fully cached workflow do not need it).
onstart:
    if any(not Path(path).exists() for stage in PLAN.stages.values()
           if stage.kind in ("train", "snapshot", "interpolate") for path in stage.outputs.values()):
        _problem = lth_data.missing(config["data"]["dataset"], config["data_dir"])
        if _problem:
            sys.exit(f"error: {_problem}")


onsuccess:
    print(f"summary: {PLAN.summary.dir}  (print it with: python -m lth summary {PLAN.summary.dir})")
    print(f"weight correlation: {PLAN.correlation.dir}")
    for run, stage in zip(PLAN.runs, PLAN.anatomy):
        print(f"ticket anatomy ({run.label}): {stage.dir}")
    if PLAN.instability:
        print(f"instability: {PLAN.instability.dir}")
    if PLAN.classes:
        print(f"ticket classes: {PLAN.classes.dir}")
    print("HTML report: snakemake --report report.html")
