# Pure helpers and input functions: they look stages up in PLAN (built in the Snakefile).
import functools

ROOT = config["results"]
ID = "[0-9a-f]{%d}" % lth_plan.ID_LENGTH
# Jobs run with the interpreter that runs snakemake (not whatever `python` is first on
# PATH), so `.venv/bin/snakemake` works without an activated venv, and import lth from this
# Snakefile's src/ (first on PYTHONPATH): the code that planned the stages runs them, even
# where another checkout is installed in that venv.
PYTHON = sys.executable
SRC = str(Path(workflow.basedir) / "src")


def gpu_request(wildcards):
    """1 for a training-class job meant for a GPU. Follows `device`: cuda asks, cpu never
    does, and auto asks when the job goes to a cluster (whose GPU nodes are why one uses
    it; set device: cpu on a CPU-only cluster) or when this host has a GPU. Evaluated per
    job, once the executor is known (a dry run cannot know it and asks as on this host)."""
    if config["device"] != "auto":
        return int(config["device"] == "cuda")
    cluster = workflow.executor_plugin is not None and not workflow.local_exec
    return int(cluster or workflow.remote_exec or _gpu_here())


@functools.cache
def _gpu_here():
    """lth_devices.gpu_expected, asked once per snakemake (was: per training-class job)."""
    return lth_devices.gpu_expected()


# Resources by the registry's class of each kind, so that a new kind (a plugin's too) gets
# its class's without a profile naming it. Training-class jobs declare gpu=1 when they are
# meant for a GPU (gpu_request), so `--resources gpu=N` caps them and the SLURM executor
# turns it into --gpus=1. Runtimes (minutes) and mem_mb are what a cluster executor asks
# for (a local run has no limit unless --resources names one); CPUs follow threads. A
# cluster profile's set-resources / set-threads override them rule by rule.
RESOURCES = {"train": {"gpu": gpu_request, "runtime": 720, "mem_mb": 16000},
             "analysis": {"runtime": 15, "mem_mb": 4000}, "small": {"runtime": 10, "mem_mb": 4000}}


def intact_targets(wildcards):
    """Every file of every stage, once the finished stages this run would reuse are checked
    against their records (a stat per file while nothing changed, a hash where size or time
    did; `verify: full` hashes all): damage stops the run here, before any job, in one line.
    An input function, so it runs when snakemake builds the DAG of this workflow (a run, a
    dry run, the report), not for --unlock nor in a cluster job's own snakemake."""
    damaged = lth_freshness.check([stage.dir for stage in PLAN.stages.values()], full=config["verify"] == "full")
    if damaged:
        sys.exit(lth_freshness.message(damaged, ROOT))
    return PLAN.targets()


wildcard_constraints:
    id=ID,


def stage_inputs(kind):
    """Input files of the stage whose ID is the job's wildcard."""
    return lambda wildcards: PLAN.get(kind, wildcards.id).inputs


def stage_outputs(kind):
    """Every file of a stage kind as output patterns, its figures flagged for the report."""
    out = {}
    for name, path in lth_plan.output_patterns(ROOT, kind.name).items():
        figure = kind.figures.get(name)
        out[name] = path if figure is None else report(
            path, caption=f"../report/{figure.caption}", category=figure.category,
            labels=figure_labels(kind.name, figure))
    return out


def manifest(kind):
    """The job's manifest (lth.runtime.job): written by onstart, read by `python -m lth run`."""
    return lambda wildcards: lth_jobs.manifest_path(ROOT, kind, wildcards.id)


# How jobs run, never what they compute: fixed-size flags, one per execution key of the
# schema (lth.plan.execution); the same for every job.
EXECUTION_FLAGS = lth_execution.flags(config)


LISTED = [f"{section}.{key}" for section, key in lth_plan.EXPANDABLE if isinstance(config[section][key], list)]


def figure_labels(kind, figure):
    """Report labels of a stage's figure: what it shows and which lottery it belongs to."""
    def labels(wildcards):
        lottery = "all lotteries"
        if figure.per_lottery:  # as lth.plan.build labels a run: its list-valued keys
            settings = PLAN.get(kind, wildcards.id).lottery
            lottery = " ".join(f"{k}={settings[k]}" for k in LISTED if k in settings) or "imp"
        return {"figure": figure.label, "lottery": lottery}
    return labels


# Cluster jobs: which stages share one (lth.plan.groups), worked out on the first job that
# asks. Snakemake ignores groups in a local run but forms them in every dry run, and there a
# group's readiness check walks all its members' input jobs each time one of them finishes:
# quadratic in the summary's and correlation's thousands (half of a 9,251-job dry run). So a
# dry run of a local run shows its jobs as that run runs them, ungrouped; a dry run for a
# cluster executor keeps them (Snakemake sets use_threads for a remote executor, never for a
# local one on POSIX unless --use-threads asks).
GROUPS = {}


def job_group(wildcards):
    if workflow.dryrun and not workflow.execution_settings.use_threads:
        return None
    if not GROUPS:
        GROUPS.update(lth_job_groups.assign(PLAN))
    return GROUPS[wildcards.id]
