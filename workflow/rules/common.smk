# Pure helpers and input functions: they look stages up in PLAN (built in the Snakefile).
import json

ROOT = config["results"]
ID = "[0-9a-f]{%d}" % lth_plan.ID_LENGTH


# Training jobs on a GPU declare gpu=1, so `--resources gpu=N` caps them (and the SLURM
# executor turns it into --gpus=1); CPU runs declare no gpu resource at all.
USES_GPU = config["device"] == "cuda" or (config["device"] == "auto" and lth_devices.gpu_expected())
TRAIN_RESOURCES = {"gpu": 1} if USES_GPU else {}


wildcard_constraints:
    id=ID,


def stage_inputs(kind):
    """Input files of the stage whose ID is the job's wildcard."""
    return lambda wildcards: PLAN.get(kind, wildcards.id).inputs


def stage_spec(kind):
    """The stage's spec as compact JSON, for --spec (it is also written as spec.json)."""
    return lambda wildcards: json.dumps(PLAN.get(kind, wildcards.id).spec(), separators=(",", ":"))


def stage_dir(wildcards, output):
    return str(Path(output.spec).parent)


def optional_mask(wildcards, input):
    return f"--mask {input.mask}" if "mask" in input.keys() else ""


def checkpoint_args(wildcards):
    """Resumable checkpoints live outside the declared outputs (Snakemake deletes those
    before a rerun), one file per stage ID."""
    return f"--checkpoint {ROOT}/checkpoints/{wildcards.id}.pt --checkpoint-every {config['checkpoint_every']}"


def device_arg(wildcards):
    return f"--device {config['device']}"


def data_dir_arg(wildcards):
    return f"--data-dir {config['data_dir']}" if config["data_dir"] else ""


def summary_levels(wildcards, input):
    """ID:METRICS:STATS of every training stage the summary reads (shared ones once)."""
    stage = PLAN.get("summary", wildcards.id)
    ids = sorted({tid for run in stage.upstream["runs"] for key, values in run.items()
                  if key not in ("label", "lottery") for tid in values if tid is not None})
    return " ".join(f"{tid}:{input[tid + '_metrics']}:{input[tid + '_stats']}" for tid in ids)


def correlation_trainings(wildcards, input):
    """ID:START:TRAINED:MODEL:STATS[:MASK] of every ticket training the correlation stage
    reads (the dense level has no mask)."""
    stage = PLAN.get("correlation", wildcards.id)
    ids = sorted({tid for run in stage.upstream["runs"] for tid in run["trains"]})
    names = ("start", "trained", "model", "stats", "mask")
    return " ".join(":".join([tid] + [input[f"{tid}_{n}"] for n in names if f"{tid}_{n}" in input.keys()])
                    for tid in ids)


def named_inputs(wildcards, input):
    """NAME=PATH for every named input, for the stage commands that take --inputs."""
    return " ".join(f"{name}={path}" for name, path in input.items())


def figure_labels(kind, figure):
    """Report labels of a stage's figure: what it shows and which lottery it belongs to."""
    def labels(wildcards):
        stage = PLAN.get(kind, wildcards.id)
        runs = [run.label for run, s in zip(PLAN.runs, PLAN.anatomy) if s.id == stage.id]
        return {"figure": figure, "lottery": runs[0] if runs else "all lotteries"}
    return labels
