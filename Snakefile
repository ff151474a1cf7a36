# Lottery-ticket workflow: init -> train -> prune -> rewind over levels of iterative
# magnitude pruning, and the analyses over them. Every stage kind is declared once, in its
# module under src/lth/stages/ (src/lth/plan/registry.py: the type); its directory is named
# by a hash of the settings it consumes, its code version and its upstream IDs
# (src/lth/plan/ids.py), so an edit reruns only what it changes. Parse time stays cheap:
# only src/lth/plan/ and the stage declarations are read, nothing imports torch.
import shlex
import sys
import time
from pathlib import Path

from snakemake.utils import min_version

# profiles, report labels and the SLURM executor plugin need Snakemake 8
min_version("8.0")

# Parse time imports lth from src/ (lth.plan and the declarations: no torch).
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from lth.nn import data as lth_data, devices as lth_devices
from lth.plan import build as lth_plan, config as lth_config, execution as lth_execution, files as lth_files
from lth.plan import groups as lth_job_groups, registry as lth_registry
from lth.runtime import job as lth_jobs
from lth.store import freshness as lth_freshness
from lth.runtime import lifeline as lth_lifeline


# Snakemake's own messages for a config.yaml that is empty (or only a comment), not a
# mapping, not UTF-8 or full of aliases are several lines or a hang: say it in one first.
if Path("config.yaml").is_file() and not workflow.config_settings.replace_workflow_config:
    try:
        lth_files.read_file("config.yaml")
    except lth_config.ConfigError as error:
        sys.exit(str(error))


configfile: "config.yaml"


# Jobs inherit this snakemake's identity: one started as it dies still knows whom to watch.
lth_lifeline.announce()
_STARTED = time.time()  # stats kept by jobs after this are settled at the end (lth.store.freshness.settle)


report: "workflow/report/workflow.rst"


try:
    # config.yaml, then each --configfile (a preset's `base: defaults` starts over: lth.plan.config.layer),
    # then --config: snakemake's own merge, except for that rule
    _settings = workflow.config_settings  # --replace-workflow-config drops config.yaml, as snakemake does
    _validated = lth_config.load([p for p in ["config.yaml"] if Path(p).is_file() and not _settings.replace_workflow_config]
                                 + [str(p) for p in _settings.configfiles], dict(_settings.config))
except lth_config.ConfigError as _error:
    sys.exit(str(_error))
config.clear()
config.update(_validated)
for _note in lth_config.notes(config):
    print(_note, file=sys.stderr)

PLAN = lth_plan.build(config)


include: "workflow/rules/common.smk"
include: "workflow/rules/stages.smk"


rule all:
    input:
        intact_targets,
    default_target: True


onstart:
    # Stop before any job runs when the dataset is missing and some stage still has to read
    # it (a dry run and a fully cached workflow do not need it).
    if any(not Path(stage.output("record")).exists() for stage in PLAN.stages.values()
           if lth_registry.get(stage.kind).resources == "train"):
        _problem = lth_data.missing(config["data"]["dataset"], config["data_dir"])
        if _problem:
            sys.exit(f"error: {_problem}")
    # Each job reads its manifest; write the missing or outdated ones (not in a dry run). A
    # results folder that cannot be created after all (a read-only mount, /proc) stops here.
    try:
        lth_jobs.write_manifests(PLAN.stages.values(), ROOT)
    except OSError as _error:
        sys.exit(f"error: config: results = \"{ROOT}\" cannot be written ({_error.strerror}: "
                 f"{_error.filename or ROOT}); choose another results folder")


onsuccess:
    lth_freshness.settle([stage.dir for stage in PLAN.stages.values()], _STARTED)
    for _kind in lth_registry.kinds():
        for _stage in PLAN.finals.get(_kind.name, []) if _kind.announce else []:
            print(_kind.announce.format(dir=shlex.quote(_stage.dir)))  # pasteable: a space in results
    print("HTML report: snakemake --report report.html")


onerror:
    lth_freshness.settle([stage.dir for stage in PLAN.stages.values()], _STARTED)
