"""A model, a pruning strategy and a stage kind, each declared in one plugin file named in
$LTH_PLUGINS, run through a tiny real workflow: declared once, everything else follows
(the schema's enums and sections, the config checks, the rules, IDs, catalog, verify)."""
import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import jobs, snakemake, tiny_config

pytestmark = pytest.mark.slow

TOY_MODEL = '''
from lth.plan.models import Model, register


def build(num_classes=10, width=1.0, dropout=0.0):
    import torch
    from torch import nn

    from lth.nn.models import PrunableModel

    class TinyMLP(PrunableModel):
        output_layer = "out.weight"
        input_shape = (1, 28, 28)

        def __init__(self):
            super().__init__()
            hidden = max(1, round(32 * width))
            self.hidden = nn.Linear(784, hidden)
            self.out = nn.Linear(hidden, num_classes)

        def forward(self, x):
            return self.out(torch.relu(self.hidden(x.flatten(1))))

    return TinyMLP()


register(Model("tiny_mlp", "toy_model:build", (1, 28, 28), "out.weight",
               {"hidden": ("hidden.weight", 25088), "output": ("out.weight", 320)}))
'''

TOY_STRATEGY = '''
import numpy as np

from lth.plan.strategies import Strategy, register


def prune_round(weights, mask, rates, output_layer, settings):
    """Each tensor loses its largest survivors (largest_first) or its smallest."""
    from lth.nn.pruning import prune_count
    out = {}
    for name, rate in rates.items():
        keep = mask[name].ravel().copy()
        alive = np.flatnonzero(keep)
        magnitude = np.abs(weights[name].ravel()[alive])
        order = np.argsort(-magnitude if settings["largest_first"] else magnitude, kind="stable")
        keep[alive[order[:prune_count(rate, alive.size)]]] = False
        out[name] = keep.reshape(mask[name].shape)
    return out


register(Strategy("toy_largest", "toy_strategy:prune_round",
                  settings={"largest_first": {"type": "boolean", "default": True,
                                              "description": "true or false: prune the largest first"}},
                  description="the largest magnitudes pruned first"))
'''

TOY_STAGE = '''
from lth.plan.ids import consumed
from lth.plan.registry import StageKind, register


def plan(cfg, plan, make):
    return make("toy", None, None, {"table": plan.summary.output("table")}, consumed("toy", cfg))


def run(job):
    import pandas as pd
    rows = len(pd.read_parquet(job.inputs["table"]))
    job.outputs["text"].write_text(f"{rows} {job.settings['toy']['word']} for {job.settings['levels']} levels\\n")
    return {"rows": rows}


register(StageKind("toy", VERSION, run, {"text": "count.txt"}, consumes=("levels", "toy.word"), plan=plan,
                   needs=("summary",), announce="toy: {dir}",
                   config={"toy": {"type": "object", "additionalProperties": False, "default": {},
                                   "description": "the toy stage",
                                   "properties": {"word": {"type": "string", "default": "rows",
                                                           "description": "what the count is of"}}}}))
'''


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "toy_model.py").write_text(TOY_MODEL)
    (folder / "toy_strategy.py").write_text(TOY_STRATEGY)
    monkeypatch.setenv("LTH_PLUGINS", "toy_model, toy_strategy, toy_stage")
    monkeypatch.setenv("PYTHONPATH", str(folder))

    def stage(version):
        (folder / "toy_stage.py").write_text(TOY_STAGE.replace("VERSION", str(version)))
    stage(1)
    return stage


def test_a_model_a_strategy_and_a_stage_kind_each_from_one_plugin_file(tmp_path, small_idx_dataset, plugins):
    workdir = tmp_path / "wf"
    workdir.mkdir()
    cfg = tiny_config(small_idx_dataset, levels=1, model={"name": "tiny_mlp"},
                      prune={"strategy": "toy_largest", "rate": 0.5, "output_rate": 0.25}, toy={"word": "lines"})
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(workdir)
    assert jobs(proc) == {"init": 1, "train": 2, "prune": 1, "rewind": 1, "summary": 1, "correlation": 1,
                          "anatomy": 1, "toy": 1}
    results = workdir / "results"
    toy = next((results / "toy").iterdir())
    assert (toy / "count.txt").read_text() == "2 lines for 1 levels\n" and f"toy: results/toy/{toy.name}" in proc.stdout

    # the strategy pruned the largest half of each hidden layer's trained weights
    from lth.store import masks, ptfile
    mask = masks.read(next((results / "prune").iterdir()) / "mask.parquet")
    dense = next(d for d in (results / "train").iterdir() if '"level": 0' in (d / "spec.json").read_text())
    weights = ptfile.load(dense / "weights.pt")
    assert {n: int(m.sum()) for n, m in mask.items()} == {"hidden.weight": 12544, "out.weight": 240}
    kept, pruned = np.abs(weights["hidden.weight"][mask["hidden.weight"]]), \
        np.abs(weights["hidden.weight"][~mask["hidden.weight"]])
    assert kept.max() <= pruned.min()

    assert jobs(snakemake(workdir)) == {}
    # the strategy's own setting is in the prune ID: the dense network is not retrained
    cfg["prune"]["toy_largest"] = {"largest_first": False}
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert jobs(snakemake(workdir)) == {"prune": 1, "rewind": 1, "train": 1, "summary": 1, "correlation": 1,
                                        "anatomy": 1, "toy": 1}
    plugins(2)  # a bumped code version reruns that kind (and what depends on it), nothing else
    assert jobs(snakemake(workdir)) == {"toy": 1}
    verify = subprocess.run([sys.executable, "-m", "lth", "verify"], cwd=workdir, capture_output=True, text=True)
    assert verify.returncode == 0 and "17 stages checked" in verify.stdout, verify.stdout + verify.stderr

    # the declarations refuse what does not fit them, in one line, before any job
    for bad, says in ((["levels=40"], "levels = 40 with prune.rate = 0.5 empties hidden.weight (25,088 weights) at level 15"),
                      (["toy={'words': 'x'}"], "unknown key toy.words; allowed keys in toy: word"),
                      (["prune={'toy_largest': {'largest': 1}}"], "unknown key prune.toy_largest.largest")):
        proc = snakemake(workdir, "-n", "--config", *bad, check=False)
        assert proc.returncode != 0 and says in proc.stdout + proc.stderr, proc.stderr[-2000:]
