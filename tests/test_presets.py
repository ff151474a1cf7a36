"""Every preset loads through the schema and builds its DAG (a Snakemake dry run); the
LMC'20 presets prune to Table 1's densities."""
import shutil
import subprocess
import sys

import pytest
import yaml

from lth.plan import config, build as plan
from conftest import ROOT

PRESETS = sorted((ROOT / "presets").glob("*.yaml"))


def test_there_are_presets_for_every_protocol():
    names = {p.stem for p in PRESETS}
    assert {"lth19_lenet_mnist", "lth19_conv2_cifar10", "lth19_conv4_cifar10", "lth19_conv6_cifar10",
            "lth19_vgg19_warmup", "lth19_vgg19_lowlr", "lth19_resnet18_warmup", "lth19_resnet18_lowlr",
            "lmc20_lenet_mnist", "lmc20_resnet20_standard", "lmc20_resnet20_low", "lmc20_resnet20_warmup",
            "lmc20_vgg16_standard", "lmc20_vgg16_low", "lmc20_vgg16_warmup", "fashion_lenet_cpu"} <= names


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_is_valid_names_its_source_and_dry_runs(preset, tmp_path):
    text = preset.read_text()
    assert text.startswith("# ") and any(venue in text for venue in ("ICLR", "ICML", "NeurIPS", "Fashion-MNIST"))
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


# Frankle et al. 2020, Table 1: the density of the IMP subnetworks each row studies (%).
TABLE1_DENSITY = {"lmc20_lenet_mnist": 3.5, "lmc20_resnet20_standard": 16.8, "lmc20_resnet20_low": 8.6,
                  "lmc20_resnet20_warmup": 8.6, "lmc20_vgg16_standard": 1.5, "lmc20_vgg16_low": 5.5,
                  "lmc20_vgg16_warmup": 1.5}


def density_after(model, prune: dict, rounds: int) -> float:
    """Percent of prunable weights left after `rounds` rounds, by the pruning counts alone
    (lth.nn.pruning.prune_count; global ranking pools the hidden tensors, the output layer apart)."""
    from lth.nn import pruning
    params = dict(model.named_parameters())
    sizes = {n: params[n].numel() for n in model.prunable()}
    rates = pruning.layer_rates(list(sizes), model.output_layer, prune["rate"], prune["output_rate"],
                                prune["conv_rate"], {n for n in sizes if params[n].ndim == 4})
    out = model.output_layer
    if prune["strategy"] == "global":  # one pool of hidden weights at one rate, the output apart
        sizes = {"hidden": sum(k for n, k in sizes.items() if n != out), out: sizes[out]}
        rates = {"hidden": prune["rate"], out: rates[out]}
    left = dict(sizes)
    for _ in range(rounds):
        left = {n: k - pruning.prune_count(rates[n], k) for n, k in left.items()}
    return 100 * sum(left.values()) / sum(sizes.values())


@pytest.mark.parametrize("name", sorted(TABLE1_DENSITY))
def test_lmc20_presets_prune_to_the_table_1_density(name):
    from lth.nn import models
    cfg = config.load([ROOT / "config.yaml", ROOT / "presets" / f"{name}.yaml"])
    model = models.build(cfg["model"]["name"])
    target = TABLE1_DENSITY[name]
    closest = min(range(1, 30), key=lambda rounds: abs(density_after(model, cfg["prune"], rounds) - target))
    assert cfg["levels"] == closest, f"{name}: {closest} rounds give {density_after(model, cfg['prune'], closest):.2f} %"
    assert cfg["levels"] in cfg["instability"]["levels"]  # the paper's subnetwork is analysed


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_a_preset_means_the_same_whatever_the_default_experiment(preset, tmp_path):
    """A preset starts from the schema defaults (`base: defaults`), not from config.yaml:
    config.yaml + preset plans exactly what the defaults + preset plan, and so does another
    default experiment; only config.yaml's execution keys (where and how to run) carry over."""
    alone = plan.build(config.load([preset]))
    other = tmp_path / "config.yaml"
    other.write_text("levels: 2\ndata_dir: /elsewhere\nresults: out\ntrain: {lr: 0.5, iterations: 7it}\n"
                     "controls: {random_prune: true}\nlandscape: {levels: [1]}\ninstability: {levels: [1]}\n")
    for default in (ROOT / "config.yaml", other):
        layered = config.load([default, preset])
        assert sorted(plan.build(layered).stages) == sorted(alone.stages)  # stage IDs
    kept = config.load([other, preset])
    if "data_dir" not in yaml.safe_load(preset.read_text()):
        assert kept["data_dir"] == "/elsewhere"
    assert kept["results"] == "out" and kept["levels"] == alone.config["levels"]


def test_an_unknown_base_is_refused_in_one_line(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("base: config\nlevels: 1\n")
    with pytest.raises(config.ConfigError, match=r"p.yaml: base: 'config' is not known; write `base: defaults`"):
        config.load([ROOT / "config.yaml", bad])
