"""Every preset loads through the schema and builds its DAG (a Snakemake dry run)."""
import shutil
import subprocess
import sys

import pytest

from lth import config, plan
from conftest import ROOT

PRESETS = sorted((ROOT / "presets").glob("*.yaml"))


def test_there_are_presets_for_every_protocol():
    names = {p.stem for p in PRESETS}
    assert {"lth19_lenet_mnist", "lth19_conv2_cifar10", "lth19_conv4_cifar10", "lth19_conv6_cifar10",
            "lth19_vgg19_warmup", "lth19_vgg19_lowlr", "lth19_resnet18_warmup", "lth19_resnet18_lowlr",
            "lmc20_lenet_mnist", "lmc20_resnet20_standard", "lmc20_resnet20_low", "lmc20_resnet20_warmup",
            "lmc20_vgg16_standard", "lmc20_vgg16_low", "lmc20_vgg16_warmup", "fashion_lenet_cpu"} <= names


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_is_valid_names_its_source_and_dry_runs(preset, tmp_path):
    text = preset.read_text()
    assert text.startswith("# ") and ("ICLR" in text or "ICML" in text or "Fashion-MNIST" in text)
    cfg = config.load([ROOT / "config.yaml", preset])  # what `python -m lth plan config.yaml PRESET` reads
    built = plan.build(cfg)
    stages = built.stages
    assert sum(s.kind == "train" for s in stages.values()) > cfg["levels"]
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-n",
                           "--cores", "2", "--configfile", str(preset)],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Job stats:" in proc.stdout + proc.stderr
    # the library's view of config.yaml + the preset is the workflow's: same stage IDs
    assert f"{built.summary.dir}/summary.csv" in proc.stdout + proc.stderr
