"""Bad input, one table: every row goes through the real entry points (`python -m lth
check-config`, `plan`, `summary` and `snakemake -n`) and must stop with exactly one line
naming the key, with no traceback and a non-zero exit, before any job runs.

The next key added to the schema is one more row here.

Each row's `python -m lth check-config` and `python -m snakemake -n` run in a fork of an
interpreter that has already imported what the entry point imports before it reads any
config (`Warm`): the row-independent start-up (~2 s of imports for snakemake) is paid once
per module instead of once per row, and the two entry points run side by side, each in its
own folder. The first row of each error family (the function of lth that raises it, with or
without --config) also runs both entry points as fresh processes, which must print byte for
byte what the forks printed, with the same exit status."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

SNAKEFILE = ROOT / "Snakefile"
# (row id, config.yaml text, --config strings, text the one line must contain)
ROWS = [
    ("results empty", 'results: ""', [], "results"),
    ("results is a file", "results: /etc/hostname", [], "results"),
    ("results under a file", "results: /etc/hostname/sub", [], "results"),
    ("results blank", 'results: "  "', [], "results"),
    ("results with braces", 'results: "res{x}"', [], "results"),
    ("results the working directory", "results: ./", [], "results"),
    ("results name too long", "results: " + "a" * 300, [], "results"),
    ("levels negative", "levels: -1", [], "levels"),
    ("levels fractional", "levels: 2.5", [], "levels"),
    ("levels huge", "levels: 1000000000", [], "levels"),
    ("levels word", "levels: many", [], "levels"),
    ("threads zero", "threads: 0", [], "threads"),
    ("verify unknown", "verify: sometimes", [], "verify"),
    ("gpu slots zero", "gpu_slots: 0", [], "gpu_slots"),
    ("checkpoint interval in days", "checkpoint_every: 2d", [], "checkpoint_every"),
    ("checkpoint interval twice in time", "checkpoint_every: 10min,30s", [], "checkpoint_every"),
    ("device unknown", "device: gpu", [], "device"),
    ("checkpoint zero", "checkpoint_every: 0it", [], "checkpoint_every"),
    ("deterministic word", "deterministic: sometimes", [], "deterministic"),
    ("precision unknown", "train: {precision: fp8}", [], "train.precision"),
    ("unknown key", "bogus: 1", [], "bogus"),
    ("data_dir a list", "data_dir: [a, b]", [], "data_dir"),
    ("model unknown", "model: {name: resnet}", [], "model.name"),
    ("model vs dataset", "model: {name: conv2}", [], "model.name"),
    ("lenet widths one layer", "model: {widths: [300]}", [], "model.widths"),
    ("residual of a lenet", "model: {residual: false}", [], "model.residual"),
    ("init seed negative", "init: {seed: -1}", [], "init.seed"),
    ("init seed too large", "init: {seed: 1099511627776}", [], "init.seed"),
    ("init seed twice", "init: {seed: [0, 0]}", [], "init.seed"),
    ("init seed empty list", "init: {seed: []}", [], "init.seed"),
    ("init std scale zero", "init: {std_scale: 0}", [], "init.std_scale"),
    ("warmups equal in iterations", "train: {warmup: [1ep, 916it]}", [], "train.warmup"),
    ("dense lr zero", "train: {dense_lr: [0.1, 0]}", [], "train.dense_lr"),
    ("dataset unknown", "data: {dataset: imagenet}", [], "data.dataset"),
    ("validation zero", "data: {validation_size: 0}", [], "data.validation_size"),
    ("validation too large", "data: {validation_size: 59990}", [], "data.validation_size"),
    ("split seed fractional", "data: {split_seed: 1.5}", [], "data.split_seed"),
    ("lr nan", "train: {lr: .nan}", [], "train.lr"),
    ("lr inf", "train: {lr: .inf}", [], "train.lr"),
    ("lr negative", "train: {lr: -1}", [], "train.lr"),
    ("lr twice", "train: {lr: [0.1, 0.1]}", [], "train.lr"),
    ("lr twice spelled differently", "train: {lr: [0.001, 1.0e-3]}", [], "train.lr"),
    ("optimizer unknown", "train: {optimizer: rmsprop}", [], "train.optimizer"),
    ("momentum one", "train: {momentum: 1}", [], "train.momentum"),
    ("batch zero", "train: {batch_size: 0}", [], "train.batch_size"),
    ("batch fractional", "train: {batch_size: 60.5}", [], "train.batch_size"),
    ("iterations words", "train: {iterations: 10 epochs}", [], "train.iterations"),
    ("iterations zero", "train: {iterations: 0}", [], "train.iterations"),
    ("gamma inf", "train: {gamma: .inf}", [], "train.gamma"),
    ("dropout one", "train: {dropout: 1}", [], "train.dropout"),
    ("milestones twice", "train: {milestones: [500it, 500]}", [], "train.milestones"),
    ("warmup negative", "train: {warmup: -5}", [], "train.warmup"),
    ("divergence factor one", "train: {divergence_factor: 1}", [], "train.divergence_factor"),
    ("weight decay negative", "train: {weight_decay: -0.1}", [], "train.weight_decay"),
    ("augment word", "train: {augment: maybe}", [], "train.augment"),
    ("prune rate above one", "prune: {rate: 1.5}", [], "prune.rate"),
    ("prune rate nan", "prune: {rate: .nan}", [], "prune.rate"),
    ("prune strategy unknown", "prune: {strategy: random}", [], "prune.strategy"),
    ("conv rate with global", "prune: {strategy: global, conv_rate: 0.1}", [], "prune.conv_rate"),
    ("output rate negative", "prune: {output_rate: -0.1}", [], "prune.output_rate"),
    ("no layer type pruned", "prune: {rate: 0, output_rate: 0}", [], "prune.rate"),
    ("rewind in epochs past iterations", "rewind: {to: 1ep}\ntrain: {iterations: 300it}", [], "rewind.to"),
    ("rewind word", "rewind: {to: later}", [], "rewind.to"),
    ("rewind twice", "rewind: {to: [reset, reset]}", [], "rewind.to"),
    ("control flag word", "controls: {random_reinit: maybe}", [], "controls.random_reinit"),
    ("control seed negative", "controls: {seed: -3}", [], "controls.seed"),
    ("rp fraction zero", "analysis: {rp_fractions: [0, 0.5]}", [], "analysis.rp_fractions"),
    ("rp fraction twice", "analysis: {rp_fractions: [0.1, 0.1]}", [], "analysis.rp_fractions"),
    ("instability level twice", "instability: {levels: [0, 0]}", [], "instability.levels"),
    ("instability pairs zero", "instability: {pairs: 0}", [], "instability.pairs"),
    ("instability pairs huge", "instability: {pairs: 1000}", [], "instability.pairs"),
    ("instability alphas one", "instability: {alphas: 1}", [], "instability.alphas"),
    ("instability variant without control", "instability: {levels: [1], variants: [random_prune]}", [],
     "instability.variants"),
    ("instability threshold one", "instability: {threshold: 1}", [], "instability.threshold"),
    ("instability point past the end", "instability: {points: [100000it]}\ntrain: {iterations: 5000it}", [],
     "instability.points"),
    ("telemetry every beyond training", "telemetry: {levels: [0], every: 60000it}", [], "telemetry.every"),
    ("telemetry early phase beyond training", "telemetry: {levels: [0], early_until: 60ep}", [],
     "telemetry.early_until"),
    ("telemetry examples zero", "telemetry: {examples: 0}", [], "telemetry.examples"),
    ("telemetry levels negative", "telemetry: {levels: [-1]}", [], "telemetry.levels"),
    ("summary accuracy_at off the evaluation points", "summary: {accuracy_at: [1500it]}", [],
     "summary.accuracy_at"),
    ("summary accuracy_at in epochs", "summary: {accuracy_at: [2ep]}", [], "summary.accuracy_at"),
    ("summary curves too many", "summary: {curves: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]}", [],
     "summary.curves"),
    ("reset at end without continue", "rewind: {reset_at_end: true}", [], "rewind.reset_at_end"),
    ("units ranked globally", "prune: {strategy: global, granularity: units}", [], "prune.granularity"),
    ("filters of a model without conv", "prune: {granularity: filters}", [], "prune.granularity"),
    ("criterion unknown", "prune: {criterion: activations}", [], "prune.criterion"),
    ("admm by units", "prune: {strategy: admm, granularity: units}", [], "prune.granularity"),
    ("pretrain task unknown", "pretrain: {task: jigsaw}", [], "pretrain.task"),
    ("blur factor not dividing", "pretrain: {task: [none, blur], blur_factor: 5}", [], "pretrain.blur_factor"),
    ("trajectory point after training", "trajectory: {levels: [0], points: [99999it]}", [], "trajectory.points"),
    ("trajectory grid too small", "trajectory: {grid: 2}", [], "trajectory.grid"),
    ("curvature without trajectory", "curvature: {enabled: true}", [], "curvature.enabled"),
    ("admm rho zero", "prune: {strategy: admm, admm: {rho: 0}}", [], "prune.admm.rho"),
    ("gradient batches beyond the data", "prune: {criterion: gradient, gradient: {batches: 1000, batch_size: 1000}}",
     [], "prune.gradient"),
    ("instability schedule unknown", "instability: {schedule: [restart]}", [], "instability.schedule"),
    ("landscape grid even", "landscape: {grid: 10}", [], "landscape.grid"),
    ("landscape span zero", "landscape: {span: 0}", [], "landscape.span"),
    ("perturb kind unknown", "perturb: {kinds: [flip]}", [], "perturb.kinds"),
    ("perturb noise negative", "perturb: {noise: [-1]}", [], "perturb.noise"),
    ("perturb level zero", "perturb: {levels: [0]}", [], "perturb.levels"),
    ("classes without controls", "classes: {enabled: true}", [], "classes.enabled"),
    ("classes margin negative", "classes: {margin: -1}", [], "classes.margin"),
    ("sweep too large", "levels: 40\ninit: {seed: [" + ", ".join(map(str, range(100))) + "]}\n"
     "train: {lr: [" + ", ".join(f"0.{i + 1:03d}" for i in range(30)) + "]}", [], "stages"),
    ("--config NaN", "levels: 2", ['prune={"rate": NaN}'], "prune.rate"),
    ("--config float levels", "levels: 2", ["levels=1e9"], "levels"),
    ("--config word lr", "levels: 2", ['train={"lr": "abc"}'], "train.lr"),
    ("--config inf gamma", "levels: 2", ["train={gamma: inf}"], "train.gamma"),
    ("empty config file", "", [], "empty"),
    ("config file of a comment only", "# nothing yet", [], "empty"),
    ("config file of null", "~", [], "empty"),
    ("config file of a list", "- levels: 2", [], "mapping"),
    ("number as a key", "1: 2", [], "key 1 is not a name"),
    ("yes as a key in a section", "train: {yes: 2}", [], "key true in train is not a name"),
    ("alias in a config file", "a: &a [1, 2]\nb: *a", [], "alias *a"),
    ("rewind points equal in iterations", "rewind: {to: [1ep, 916it]}", [], "rewind.to has 1ep and 916it"),
    ("rewind reset twice, once as 0ep", "rewind: {to: [reset, 0ep]}", [], "rewind.to"),
    ("milestones equal in iterations", "train: {milestones: [1ep, 916it]}", [], "train.milestones"),
    ("milestone after the end", "train: {iterations: 300it, milestones: [500it]}", [], "train.milestones"),
    ("warmup longer than training", "train: {iterations: 300it, warmup: 1000it}", [], "train.warmup"),
    ("evaluation interval longer than training", "train: {iterations: 10000it, eval_every: 20000it}", [],
     "train.eval_every"),
    ("a sweep past what snakemake schedules (60,500 stages)",
     "levels: 20\ninit: {seed: [" + ", ".join(map(str, range(25))) + "]}\ntrain: {lr: ["
     + ", ".join(f"0.{i + 1:03d}" for i in range(10)) + "]}\n"
     "controls: {random_reinit: true, random_prune: true, small_dense: true}", [], "60,500 stages"),
    ("levels that empty a layer", "levels: 50", [], "empties fc2.weight (30,000 weights) at level 42"),
    ("rate that empties a layer", "levels: 4\nprune: {rate: 0.99}", [], "prune.rate = 0.99"),
    ("weight decay above 1", "train: {weight_decay: 1.0e+300}", [], "train.weight_decay"),
    ("noise scale huge", "perturb: {kinds: [noise], noise: [1.0e+40]}", [], "perturb.noise"),
    ("instability point spelled as the rewind point another way",
     "rewind: {to: 1ep}\ninstability: {levels: [0], points: [916it]}", [], "which is rewind.to 1ep"),
    ("global pruning that empties the output layer", "levels: 60\nprune: {strategy: global}", [],
     "prune.output_rate = 0.1 empties fc3.weight"),
    ("instability points equal in iterations", "instability: {levels: [0], points: [1ep, 916it]}", [],
     "instability.points"),
]
BANNER = ("Using workflow specific profile", "Assuming unrestricted shared filesystem",
          "Config file config.yaml is extended by additional config")


def one_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip() and not line.startswith(BANNER)]
    assert "Traceback" not in output and len(lines) == 1, output
    return lines[0]


# The forked interpreter: it imports PRELOAD, then reads one request a line from stdin
# (arguments, stdout and stderr files) and forks; the child takes the files as its fds 0-2
# and runs the entry point at top level as `python -m` does (runpy), so that its exit, its
# SystemExit message and its exit handlers are the interpreter's own; the parent answers
# with the child's exit status.
_WARM = r"""
import json, os, runpy, sys
module, preload = sys.argv[1], sys.argv[2:]
sys.path[0] = os.getcwd()  # as `python -m` sets it
for name in preload:
    __import__(name)
while True:
    line = sys.stdin.readline()
    if not line:
        os._exit(0)
    request = json.loads(line)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        break
    _, status = os.waitpid(pid, 0)
    sys.stdout.write(json.dumps(os.waitstatus_to_exitcode(status)) + "\n")
    sys.stdout.flush()
for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                        (2, request["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
    opened = os.open(path, flags, 0o644)
    os.dup2(opened, fd)
    os.close(opened)
sys.stdin = open(os.devnull)
sys.argv = [module, *request["args"]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""
# What `python -m MODULE` imports before it reads a config: the entry point, and for
# snakemake the libraries it imports later whatever the Snakefile (lth itself is imported
# by the Snakefile in the child, as in a fresh snakemake).
PRELOAD = {"lth": ["lth.cli"],
           "snakemake": ["snakemake.cli", "snakemake.api", "snakemake.workflow", "snakemake.report.html_reporter",
                         "snakemake.storage", "snakemake.profiles", "smart_open", "jsonschema", "yaml"]}


class Warm:
    """`python -m MODULE ARGS` in `folder`, run by a fork of one interpreter that has imported
    PRELOAD[MODULE]. The folder is the interpreter's working directory for good: snakemake
    notes the working directory when it is imported (snakemake.workflow.Workflow._rundir),
    so every run happens where the interpreter started, as in a fresh process. `send` starts
    a run and `receive` waits for it (two modules' runs go side by side)."""

    def __init__(self, module: str, folder: Path, logs: Path):
        self.module, self.logs, self.pending = module, logs, 0
        self.out, self.err = logs / f"{module}.out", logs / f"{module}.err"
        with open(logs / f"{module}-server.err", "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-c", _WARM, module, *PRELOAD[module]], cwd=folder,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)

    def send(self, *args) -> None:
        while self.pending:  # a run a failed test never waited for: its answer is not the next one's
            self._answer()
        self.args = [self.module, *args]
        self.proc.stdin.write(json.dumps({"args": list(args), "out": str(self.out), "err": str(self.err)}) + "\n")
        self.proc.stdin.flush()
        self.pending += 1

    def _answer(self) -> int:
        answer = self.proc.stdout.readline()
        self.pending -= 1
        assert answer, f"the warm {self.module} died: " + (self.logs / f"{self.module}-server.err").read_text()
        return json.loads(answer)

    def receive(self) -> subprocess.CompletedProcess:
        code = self._answer()
        return subprocess.CompletedProcess(self.args, code, self.out.read_text(), self.err.read_text())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


ENTRY_POINTS = ("lth", "snakemake")


@pytest.fixture(scope="module")
def rows_folders(tmp_path_factory) -> dict:
    """Where each entry point runs every row, emptied before each (`fresh_folder`): one folder
    per entry point, so that the two run side by side."""
    return {module: tmp_path_factory.mktemp(f"bad-input-{module}") for module in ENTRY_POINTS}


@pytest.fixture(scope="module")
def warm(rows_folders, tmp_path_factory):
    logs = tmp_path_factory.mktemp("bad-input-warm")
    entry = {module: Warm(module, rows_folders[module], logs) for module in ENTRY_POINTS}
    yield entry
    for one in entry.values():
        one.close()


def fresh_folder(folder: Path, text: str) -> None:
    """The folder as a new tmp_path with the row's config.yaml: nothing else in it."""
    for child in folder.iterdir():
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    (folder / "config.yaml").write_text(text + "\n" if text else "")


def family(folder: Path, text: str, overrides: list) -> tuple:
    """The function of lth that refuses the row (in this process, as the CLI reads it), and
    whether it comes with --config."""
    from lth.plan import config, files
    fresh_folder(folder, text)
    before = os.getcwd()
    os.chdir(folder)
    try:
        config.load(["config.yaml"], files.parse_overrides(overrides))
        raised = "nothing"
    except Exception as error:  # noqa: BLE001 - any other exception is a family of its own
        raised, tb = type(error).__name__, error.__traceback__
        while tb is not None:
            if tb.tb_frame.f_globals.get("__name__", "").startswith("lth."):
                raised = f"{tb.tb_frame.f_globals['__name__']}.{tb.tb_frame.f_code.co_name}"
            tb = tb.tb_next
    finally:
        os.chdir(before)
    return raised, bool(overrides)


@pytest.fixture(scope="module")
def representatives(tmp_path_factory) -> set:
    """The first row of each family: those also run as fresh processes."""
    folder = tmp_path_factory.mktemp("bad-input-families")
    first = {}
    for name, text, overrides, _ in ROWS:
        first.setdefault(family(folder, text, overrides), name)
    return set(first.values())


def stops_in_one_line(folders: dict, key: str, lth, snake) -> None:
    """What each row must show: `lth` (check-config) and `snake` (snakemake -n), each run in
    its folder of `folders`."""
    assert lth.returncode == 2 and lth.stdout == ""
    line = one_line(lth.stderr)
    assert line.startswith(("error: config: ", "error: config file ")) and key in line, line
    assert snake.returncode != 0
    assert one_line(snake.stdout + snake.stderr) == line.removeprefix("error: ") or \
        line.startswith("error: config file ")  # snakemake's config.yaml message words it its own way
    for folder in folders.values():
        assert not (folder / "results").exists() and not (folder / ".snakemake" / "log").exists() or \
            not any((folder / ".snakemake" / "log").iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("name, text, overrides, key", ROWS, ids=[row[0] for row in ROWS])
def test_bad_input_stops_every_entry_point_in_one_line(rows_folders, warm, representatives, name, text, overrides,
                                                      key):
    extra = ["--config", *overrides] if overrides else []
    args = {"lth": ["check-config", *extra], "snakemake": ["-s", str(SNAKEFILE), "-n", "--cores", "1", *extra]}
    for module in ENTRY_POINTS:
        fresh_folder(rows_folders[module], text)
        warm[module].send(*args[module])
    forked = {module: warm[module].receive() for module in ENTRY_POINTS}
    stops_in_one_line(rows_folders, key, forked["lth"], forked["snakemake"])
    if name in representatives:  # the same row in fresh processes: the same bytes, the same exit
        started = {}
        for module in ENTRY_POINTS:
            fresh_folder(rows_folders[module], text)
            started[module] = subprocess.Popen([sys.executable, "-m", module, *args[module]], cwd=rows_folders[module],
                                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        fresh = {module: subprocess.CompletedProcess(proc.args, None, *proc.communicate())
                 for module, proc in started.items()}
        for module, proc in started.items():
            fresh[module].returncode = proc.returncode
        stops_in_one_line(rows_folders, key, fresh["lth"], fresh["snakemake"])
        for module in ENTRY_POINTS:
            assert (forked[module].returncode, forked[module].stdout, forked[module].stderr) == \
                (fresh[module].returncode, fresh[module].stdout, fresh[module].stderr), (forked[module], fresh[module])


@pytest.mark.parametrize("command", ["plan", "summary"])
@pytest.mark.parametrize("row", [r for r in ROWS if r[0] in ("lr nan", "levels huge", "rewind in epochs past "
                                                               "iterations", "--config NaN", "init seed twice")],
                         ids=lambda r: r[0])
def test_plan_and_summary_refuse_alike(tmp_path, command, row):
    _, text, overrides, key = row
    (tmp_path / "config.yaml").write_text(text + "\n")
    proc = subprocess.run([sys.executable, "-m", "lth", command, *(["--config", *overrides] if overrides else [])],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2 and key in one_line(proc.stderr)


def test_the_table_covers_every_section_and_enough_inputs():
    from lth.plan import config
    sections = set(config.load_schema()["properties"])
    covered = {row[3].split(".")[0] for row in ROWS} | {row[1].split(":")[0] for row in ROWS if row[1]}
    assert sections <= covered, sections - covered
    assert len(ROWS) >= 40


def test_validation_size_must_fit_the_real_files(tmp_path, small_idx_dataset):
    """The training set's size comes from the dataset files' headers (1,200 examples here)."""
    (tmp_path / "config.yaml").write_text(f"data_dir: {small_idx_dataset}\ndata: {{validation_size: 1190}}\n")
    proc = subprocess.run([sys.executable, "-m", "lth", "check-config"], cwd=tmp_path, capture_output=True, text=True)
    line = one_line(proc.stderr)
    assert proc.returncode == 2 and "data.validation_size = 1190" in line and "1200 training examples" in line


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path):
    (tmp_path / "config.yaml").write_bytes(b"\xff\xfelevels: 1\n")
    lth = subprocess.run([sys.executable, "-m", "lth", "check-config"], cwd=tmp_path, capture_output=True, text=True)
    assert lth.returncode == 2 and one_line(lth.stderr) == "error: config file config.yaml: not UTF-8 text (byte 0); save it as UTF-8"
    snake = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "-n", "--cores", "1"],
                           cwd=tmp_path, capture_output=True, text=True)
    assert snake.returncode != 0 and one_line(snake.stdout + snake.stderr) == lth.stderr.strip().removeprefix("error: ")


@pytest.mark.parametrize("results", ["dangling", "/proc/lth-results"])
def test_a_results_folder_that_cannot_be_made_is_one_line_before_any_job(tmp_path, results):
    """A link to nowhere is refused by every entry point; a path that looks creatable but is
    not (/proc, as root) stops the real run before its first job."""
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere" / "deeper")
    (tmp_path / "config.yaml").write_text(f"results: {results}\nlevels: 0\n")
    snake = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--cores", "1"],
                           cwd=tmp_path, capture_output=True, text=True)
    output = snake.stdout + snake.stderr
    errors = [line for line in output.splitlines() if "results =" in line]
    assert snake.returncode != 0 and "Traceback" not in output and len(errors) == 1, output
    assert f'results = "{results}"' in errors[0], errors
    assert not (tmp_path / "nowhere").exists() and "Finished job" not in output
