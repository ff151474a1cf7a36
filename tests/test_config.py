import pytest
import yaml

from lth.plan import checks, config
from lth.plan import files as config_files
from conftest import ROOT


def test_default_config_file_is_valid_and_complete():
    cfg = config.load(ROOT / "config.yaml")
    assert cfg["model"]["name"] == "lenet_300_100"
    assert cfg["levels"] >= 6
    assert {k: cfg["prune"][k] for k in ("strategy", "rate", "output_rate", "schedule")} == \
        {"strategy": "layerwise", "rate": 0.2, "output_rate": 0.1, "schedule": "iterative"}


def test_empty_config_gets_every_default():
    cfg = config.validate({})
    assert cfg["train"]["iterations"] == "50000it"
    assert cfg["data"]["validation_size"] == 5000
    assert cfg["rewind"]["to"] == "reset"


@pytest.mark.parametrize("bad, key, hint", [
    ({"prune": {"rat": 0.2}}, "prune.rat", "allowed keys in prune"),
    ({"bogus": 1}, "bogus", "allowed keys"),
    ({"train": {"lr": "fast"}}, "train.lr", "a number > 0"),
    ({"levels": 2.5}, "levels", "an integer in [0, 100]"),
    ({"levels": -1}, "levels", "an integer in [0, 100]"),
    ({"prune": {"rate": -0.1}}, "prune.rate", "0 <= rate < 1"),
    ({"prune": {"rate": 1}}, "prune.rate", "0 <= rate < 1"),
    ({"prune": {"rate": 1.5}}, "prune.rate", "0 <= rate < 1"),
    ({"prune": {"output_rate": -0.1}}, "prune.output_rate", "0 <= output_rate < 1"),
    ({"prune": {"rate": 0, "output_rate": 0}}, "prune.rate = 0 with prune.output_rate = 0", "prunes no layer"),
    ({"train": {"iterations": "10 epochs"}}, "train.iterations", "500it or 2ep"),
    ({"model": {"name": "resnet"}}, "model.name", "declared model"),
    ({"train": {"iterations": "0it"}}, "train.iterations", "at least one step"),
    ({"train": {"eval_every": 0}}, "train.eval_every", "at least one step"),
    ({"checkpoint_every": "0ep"}, "checkpoint_every", "an integer >= 1"),
    ({"train": 5}, "train", "a mapping with keys among"),
])
def test_bad_input_gives_one_line_naming_the_key(bad, key, hint):
    with pytest.raises(config.ConfigError) as err:
        config.validate(bad)
    message = str(err.value)
    assert "\n" not in message
    assert key in message and hint in message


def test_a_list_valued_key_says_why_its_scalar_form_failed():
    with pytest.raises(config.ConfigError, match=r"1.5 is greater than or equal to the maximum of 1"):
        config.validate({"prune": {"rate": 1.5}})


@pytest.mark.parametrize("bad, key", [
    ({"rewind": {"to": "5000it"}, "train": {"iterations": "5000it"}}, "rewind.to"),
    ({"rewind": {"to": ["reset", "3ep"]}, "train": {"iterations": "2ep"}}, "rewind.to"),
    ({"instability": {"points": ["100it", "900it"]}, "train": {"iterations": 800}}, "instability.points"),
])
def test_rewind_points_must_come_before_the_end_of_training(bad, key):
    with pytest.raises(config.ConfigError, match=f"config: {key} has .* not before the end of training"):
        config.validate(bad)
    config.validate({**bad, "train": {"iterations": "60000it"}})  # long enough: valid


def test_snakemake_style_string_values_are_coerced():
    # `--config prune='{"rate": 0.3}'` arrives as {"rate": "0.3"}
    cfg = config.validate({"prune": {"rate": "0.3"}, "train": {"iterations": "200", "eval_every": "50"}, "data_dir": "null"})
    assert cfg["prune"]["rate"] == 0.3
    assert cfg["train"]["iterations"] == "200it"  # a step's one spelling
    assert cfg["data_dir"] is None
    with pytest.raises(config.ConfigError, match="prune.rate"):
        config.validate({"prune": {"rate": "abc"}})


def test_overrides_merge_key_by_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"prune": {"rate": 0.2, "output_rate": 0.05}}))
    cfg = config.load(path, {"prune": {"rate": 0.3}})
    assert cfg["prune"]["rate"] == 0.3 and cfg["prune"]["output_rate"] == 0.05


def test_config_files_merge_in_order_then_overrides(tmp_path):
    base, preset = tmp_path / "base.yaml", tmp_path / "preset.yaml"
    base.write_text(yaml.safe_dump({"levels": 4, "prune": {"rate": 0.2, "output_rate": 0.05}}))
    preset.write_text(yaml.safe_dump({"levels": 6, "prune": {"rate": 0.3}}))
    overrides = config_files.parse_overrides(["prune.output_rate=0.2", "results=elsewhere", "train={lr: 0.01}"])
    # as snakemake reads them: nested scalars stay strings until validate() types them
    assert overrides == {"prune": {"output_rate": 0.2}, "results": "elsewhere", "train": {"lr": "0.01"}}
    cfg = config.load([base, preset], overrides)
    assert (cfg["levels"], cfg["prune"]["rate"], cfg["prune"]["output_rate"]) == (6, 0.3, 0.2)
    assert (cfg["results"], cfg["train"]["lr"], cfg["train"]["optimizer"]) == ("elsewhere", 0.01, "adam")
    with pytest.raises(config.ConfigError, match="expected KEY=VALUE"):
        config_files.parse_overrides(["levels"])
    with pytest.raises(config.ConfigError, match=r"config file .*nope.yaml: cannot be read"):
        config.load([base, tmp_path / "nope.yaml"])


def test_model_and_dataset_must_take_the_same_images():
    with pytest.raises(config.ConfigError, match="model.name conv2 takes 3x32x32 images but data.dataset fashion_mnist"):
        config.validate({"model": {"name": "conv2"}})
    assert config.validate({"model": {"name": "conv2"}, "data": {"dataset": "cifar10"}})["model"]["name"] == "conv2"


def test_every_declared_model_agrees_with_its_class():
    """Each declaration's input shape, output layer and smallest layers are the built
    network's (lth.nn.models.build checks on first build; here for every model, full size)."""
    import torch

    from lth.nn import models
    from lth.plan import models as declared
    for name in declared.names():
        with torch.device("meta"):
            model = models.build(name)
        spec = declared.get(name)
        assert models.disagreement(spec, model) is None, name
        sizes = {n: model.get_parameter(n).numel() for n in model.prunable()}
        roles = {"conv": [n for n in sizes if model.get_parameter(n).ndim == 4 and n != model.output_layer],
                 "hidden": [n for n in sizes if model.get_parameter(n).ndim == 2 and n != model.output_layer],
                 "output": [model.output_layer]}
        expected = {role: min(((n, sizes[n]) for n in names), key=lambda item: item[1])
                    for role, names in roles.items() if names}
        assert {k: tuple(v) for k, v in spec.smallest_for({}).items()} == expected, name
    # a declaration whose smallest layers follow its settings: LeNet at other widths
    with torch.device("meta"):
        narrow = models.build("lenet_300_100", widths=[50, 1000])
    assert declared.get("lenet_300_100").smallest_for({"widths": [50, 1000]}) == models.smallest_layers(narrow)


def test_a_declaration_that_disagrees_with_its_class_stops_the_build():
    import dataclasses

    from lth.nn import models
    from lth.plan import models as declared
    wrong = dataclasses.replace(declared.get("lenet_300_100"), smallest={"hidden": ("fc1.weight", 235200)})
    problem = models.disagreement(wrong, models.build("lenet_300_100"))
    assert problem.startswith("smallest layers {'hidden': ('fc1.weight', 235200)}, the model's are")
    wrong = dataclasses.replace(declared.get("lenet_300_100"), input_shape=(3, 32, 32))
    assert models.disagreement(wrong, models.build("lenet_300_100")) == "input (3, 32, 32), the model takes (1, 28, 28)"


def test_a_layerwise_schedule_that_empties_a_layer_is_refused_at_its_level():
    from lth.nn import pruning
    # LeNet's fc2 (30,000 weights) at rate 0.2: the level where ceil-pruning takes its last weight
    n, level = 30000, 0
    while n > 0:
        n, level = n - pruning.prune_count(0.2, n), level + 1
    assert checks.emptied_at(30000, 0.2, 100) == level == 42
    config.validate({"levels": level - 1})
    with pytest.raises(config.ConfigError, match=rf"empties fc2.weight \(30,000 weights\) at level {level}"):
        config.validate({"levels": level})
    # global ranking: the hidden layers together (the prune stage checks them), the output
    # layer on its own at output_rate 0.1, emptied at level 50
    config.validate({"levels": 49, "prune": {"strategy": "global"}})
    with pytest.raises(config.ConfigError, match=r"prune.output_rate = 0.1 empties fc3.weight .* at level 50"):
        config.validate({"levels": 50, "prune": {"strategy": "global"}})


def test_schema_offers_exactly_the_declared_models_datasets_and_strategies():
    from lth.nn import data
    from lth.plan import models, strategies
    schema = config.load_schema()["properties"]
    assert schema["model"]["properties"]["name"]["enum"] == models.names() == [
        "lenet_300_100", "conv2", "conv4", "conv6", "vgg16", "vgg19", "resnet20", "resnet32", "resnet18", "mobilenet_v1"]
    assert schema["data"]["properties"]["dataset"]["enum"] == data.names() == ["fashion_mnist", "mnist", "cifar10", "cifar100"]
    strategy = schema["prune"]["properties"]["strategy"]
    assert [b.get("enum") or b["items"]["enum"] for b in strategy["anyOf"]] == [["layerwise", "global", "admm"]] * 2
    assert "lenet_300_100 (1x28x28)" in schema["model"]["properties"]["name"]["description"]
    with pytest.raises(config.ConfigError, match=r'model.name = "lenet5" is not allowed .*expected a declared model'):
        config.validate({"model": {"name": "lenet5"}})
    with pytest.raises(config.ConfigError, match=r'prune.strategy = \["layerwise", "random"\] is not allowed'):
        config.validate({"prune": {"strategy": ["layerwise", "random"]}})


def test_conv_rate_needs_layerwise_ranking():
    with pytest.raises(config.ConfigError, match=r"prune.conv_rate needs a per-layer prune.strategy \(layerwise, admm\); "
                                                 "global ranks all hidden layers together"):
        config.validate({"prune": {"conv_rate": 0.1, "strategy": "global"}})
    with pytest.raises(config.ConfigError, match="prune.conv_rate needs a per-layer prune.strategy"):
        config.validate({"prune": {"conv_rate": 0.1, "strategy": ["layerwise", "global"]}})
    config.validate({"prune": {"conv_rate": 0.1, "strategy": ["layerwise"]}})


def test_results_is_never_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for spelling in (".", "./", str(tmp_path), f"../{tmp_path.name}"):
        with pytest.raises(config.ConfigError, match="would mix every stage folder with the project's files"):
            config.validate({"results": spelling})


def test_results_takes_its_plain_spelling():
    # snakemake warns once per path for every output under "./results": hundreds of lines
    assert config.validate({"results": "./results/"})["results"] == "results"
    assert config.validate({"results": "runs/../results"})["results"] == "results"


def test_a_list_of_warmups_is_one_lottery_each_and_refused_when_two_are_one():
    """LTH'19's warmup sweeps: train.warmup as a list plans one lottery per warmup; the
    dense training is not shared (it consumes the warmup); values must differ in iterations."""
    from lth.plan import build
    p = build.build(config.validate({"levels": 1, "train": {"warmup": ["0it", "500it"], "iterations": "2000it"}}))
    assert [r.label for r in p.runs] == ["train.warmup=0it", "train.warmup=500it"]
    assert len({r.levels[0]["train"].id for r in p.runs}) == 2
    assert p.runs[1].levels[1]["train"].settings["train"]["warmup"] == "500it"
    with pytest.raises(config.ConfigError, match="train.warmup has 1ep and 916it, both iteration 916"):
        config.validate({"train": {"warmup": ["1ep", "916it"], "iterations": "2000it"}})
    with pytest.raises(config.ConfigError, match="train.warmup = 3000it = 3000 iterations, longer than training"):
        config.validate({"train": {"warmup": ["0it", "3000it"], "iterations": "2000it"}})
