"""Checks of a schema-valid config that the schema cannot express, each refusing in one
line that names the key and the fix, before any job: keys that are not names, non-finite
numbers, list values equal once canonical, the results folder, the plan's size, the
combinations (controls, strategies, models and datasets: from their declarations) and the
steps once the dataset's size turns epochs into iterations. Torch-free.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from lth.plan import canonical
from lth.plan.config import ConfigError
from lth.plan.steps import Step, epoch_steps


def _description(schema: dict, path: list) -> str:
    """The schema's description of a key (a list item's is its list's)."""
    node = schema
    for part in path:
        if not isinstance(part, int):
            node = node.get("properties", {}).get(part, {})
    return node.get("description", "")


def _walk(value, path=()):
    """(path, leaf) of every scalar in a nested config."""
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from _walk(sub, (*path, key))
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            yield from _walk(sub, (*path, i))
    else:
        yield path, value


def _key_of(path) -> str:
    """config.key, without list positions (the message names the value)."""
    return ".".join(str(p) for p in path if not isinstance(p, int))


def keys_are_names(cfg: dict, path=()) -> None:
    """Every key a name: YAML reads unquoted 1, true, yes, on, null as values."""
    for key, value in cfg.items():
        if not isinstance(key, str):
            where = f" in {_key_of(path)}" if path else ""
            raise ConfigError(f"config: key {json.dumps(key, default=str)}{where} is not a name (YAML reads an unquoted "
                              "number, true/false, yes/no, on/off or null as a value); quote it, or use a "
                              "key from config.yaml")
        if isinstance(value, dict):
            keys_are_names(value, (*path, key))


def finite(cfg: dict, schema: dict) -> None:
    """NaN and infinities pass JSON schema range checks (nan > 0 is False, not an error) and
    no stage can use them: refuse every one, wherever it is."""
    for path, value in _walk(cfg):
        if isinstance(value, float) and not math.isfinite(value):
            allowed = _description(schema, list(path))
            raise ConfigError(f"config: {_key_of(path)} = {value} is not allowed (not a finite number)"
                              + (f"; expected {allowed}" if allowed else ""))


def distinct(cfg: dict, schema: dict, path=()) -> None:
    """List values must be distinct once canonical ([1, 1.0], ["500", "500it"] are one value
    twice): a repeated seed or rate would run, and count, one experiment twice."""
    if isinstance(cfg, dict):
        for key, sub in cfg.items():
            distinct(sub, schema, (*path, key))
    elif isinstance(cfg, list):
        seen = set()
        for value in cfg:
            text = canonical.canonical_json(value)
            if text in seen:
                raise ConfigError(f"config: {_key_of(path)} lists {json.dumps(value)} twice, once its canonical "
                                  "form is taken (1 = 1.0, 500 = 500it, 0ep = 0it; rewind.to 0it = reset); list values "
                                  "must be distinct (a repeated value would run and count one experiment twice)")
            seen.add(text)


def results_folder(results: str) -> str:
    """The results folder in its plain spelling ("./results/" is "results": snakemake warns
    about every path that starts with ./): a directory, or a path that can be created; never
    a file, never the working directory itself."""
    if os.path.normpath(results) in (".", "..") or Path(results).resolve() == Path.cwd().resolve():
        raise ConfigError(f"config: results = {json.dumps(results)} would mix every stage folder with the "
                          "project's files; name a subfolder such as results")
    results = os.path.normpath(results)
    path = Path(results)
    try:
        if path.exists() and not path.is_dir():
            raise ConfigError(f"config: results = {json.dumps(results)} is an existing file, not a folder; "
                              "name a folder (it is created if missing)")
        broken = next((p for p in (path, *path.parents) if p.is_symlink() and not p.exists()), None)
        if broken is not None:
            raise ConfigError(f"config: results = {json.dumps(results)} goes through {broken}, a link to "
                              f"{os.readlink(broken)}, which does not exist; create its target or choose another "
                              "results folder")
        existing = next((p for p in (path.absolute(), *path.absolute().parents) if p.exists()), None)
    except OSError as exc:
        raise ConfigError(f"config: results = {json.dumps(results[:80])} is not a usable path ({exc.strerror}); "
                          "choose another results folder") from None
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"config: results = {json.dumps(results)} cannot be created or written "
                          f"({existing} is not a writable folder); choose another results folder")
    return results


# What snakemake itself can schedule: a 40,422-stage dry run took 58 s and 1.5 GB here
# (2 cores, shared); 181,000 stages ran past 180 s and 6.4 GB. Beyond it, split the sweep.
MAX_STAGES = 50_000


def size(cfg: dict) -> None:
    """Bound the DAG before building it: the product of the list-valued keys times the
    stages per level, an upper estimate."""
    from lth.plan.ids import EXPANDABLE, perturbations
    lotteries = 1
    for section, key in EXPANDABLE:
        value = cfg[section][key]
        lotteries *= len(value) if isinstance(value, list) else 1
    per_level = 3 + 3 * sum(bool(cfg["controls"][c]) for c in ("random_reinit", "random_prune", "small_dense", "fine_tune")) \
        + 2 * len(perturbations(cfg))
    pairs = 3 * cfg["instability"]["pairs"] * len(cfg["instability"]["levels"]) * \
        (len(cfg["instability"]["variants"]) + len(cfg["instability"]["points"])) * len(cfg["instability"]["schedule"])
    estimate = lotteries * (2 + cfg["levels"] * per_level + pairs)
    if estimate > MAX_STAGES:
        raise ConfigError(f"config: this experiment would plan about {estimate:,} stages, more than the "
                          f"{MAX_STAGES:,} allowed; use fewer levels, list values or pairs, or split the sweep")


def emptied_at(weights: int, rate: float, levels: int) -> int | None:
    """The first level (1..levels) at which a layer of `weights` loses its last weight when
    each round prunes ceil(rate * survivors) of them (lth.nn.pruning.prune_count), or None."""
    from lth.nn.pruning import prune_count
    for level in range(1, levels + 1):
        weights -= prune_count(rate, weights)
        if weights <= 0:
            return level
    return None


def _listed(value) -> list:
    return value if isinstance(value, list) else [value]


def layers(cfg: dict) -> None:
    """A schedule that empties a layer cuts the network in two: every later level would
    report a constant network's accuracy as a result. Refused, naming the level, for every
    layer whose count is known in advance: all of them for a per-layer strategy, the output
    layer for a global one (its hidden layers are ranked together: known only when it
    happens, and the prune stage refuses an emptied layer then). From the model's
    declaration (lth.plan.models); a model that declares no smallest layers is not checked."""
    from lth.plan import models, strategies
    p = cfg["prune"]
    smallest = models.get(cfg["model"]["name"]).smallest_for(models.settings(cfg))
    if smallest is None:
        return
    per_layer = any(strategies.get(s).ranks == strategies.PER_LAYER for s in _listed(p["strategy"]))
    rate = max(_listed(p["rate"]))
    rates = {"hidden": ("prune.rate", rate), "output": ("prune.output_rate", p["output_rate"]),
             "conv": ("prune.conv_rate", p["conv_rate"]) if p["conv_rate"] is not None else ("prune.rate", rate)}
    for role, (name, weights) in smallest.items():
        if role != "output" and not per_layer:
            continue
        key, value = rates[role]
        level = emptied_at(weights, value, cfg["levels"])
        if level is not None:
            raise ConfigError(f"config: levels = {cfg['levels']} with {key} = {value} empties "
                              f"{name} ({weights:,} weights) at level {level}, cutting the network in two; "
                              f"use at most {level - 1} levels or a lower rate")


def combination(cfg: dict) -> None:
    """Cross-key checks the schema cannot express."""
    from lth.nn import data
    from lth.plan import models, strategies
    ranked_together = [s for s in _listed(cfg["prune"]["strategy"]) if strategies.get(s).ranks == strategies.GLOBAL]
    if cfg["prune"]["conv_rate"] is not None and ranked_together:
        per_layer = [s for s in strategies.names() if strategies.get(s).ranks == strategies.PER_LAYER]
        raise ConfigError(f"config: prune.conv_rate needs a per-layer prune.strategy ({', '.join(per_layer)}); "
                          f"{ranked_together[0]} ranks all hidden layers together at one rate; remove conv_rate "
                          f"or use {per_layer[0]}")
    name = cfg["model"]["name"]
    for key in set(cfg["model"]) - {"name"} - set(models.get(name).settings):
        default = next(m.settings[key]["default"] for m in map(models.get, models.names()) if key in m.settings)
        if cfg["model"][key] != default:
            takes = [m for m in models.names() if key in models.get(m).settings]
            raise ConfigError(f"config: model.{key} is a setting of {', '.join(takes)}, not of {name}; "
                              f"remove it or pick one of those models")
    p = cfg["prune"]
    smallest = models.get(name).smallest_for(models.settings(cfg))
    has_conv = smallest is None or "conv" in smallest  # undeclared: assume it may
    if 0 in _listed(p["rate"]) and not p["output_rate"] and not (has_conv and p["conv_rate"]):
        raise ConfigError(f"config: prune.rate = 0 with prune.output_rate = 0 prunes no layer of "
                          f"{cfg['model']['name']}" + (" (it has no conv layers for prune.conv_rate)"
                                                       if p["conv_rate"] and not has_conv else "")
                          + "; give a layer type a rate above 0 (conv_rate for conv-only pruning)")
    if p["granularity"] != "weights" and ranked_together:
        raise ConfigError(f"config: prune.granularity {p['granularity']} needs a per-layer prune.strategy; "
                          f"{ranked_together[0]} ranks all hidden layers together, and unit scores of layers of "
                          "different sizes are not comparable; use layerwise or granularity: weights")
    trains = [s for s in _listed(p["strategy"]) if strategies.get(s).stage != "prune"]
    if trains and (p["granularity"] != "weights" or p["criterion"] != "magnitude"):
        key = "granularity" if p["granularity"] != "weights" else "criterion"
        raise ConfigError(f"config: prune.{key} {p[key]} does not apply to prune.strategy {trains[0]}, which trains "
                          f"its way to each layer's count of single weights by magnitude; use granularity: weights "
                          f"and criterion: magnitude with it, or another strategy")
    if cfg["curvature"]["enabled"] and not cfg["trajectory"]["levels"]:
        raise ConfigError("config: curvature.enabled needs trajectory.levels (the Hessian is taken at the points the "
                          "trajectory trainings record); list the levels, e.g. trajectory: {levels: [0]}")
    blurred = {"blur", "rotation_blur"} & set(_listed(cfg["pretrain"]["task"]))
    shape = data.source(cfg["data"]["dataset"]).shape
    if blurred and any(side % cfg["pretrain"]["blur_factor"] for side in shape[1:]):
        raise ConfigError(f"config: pretrain.blur_factor {cfg['pretrain']['blur_factor']} does not divide the "
                          f"{shape[1]}x{shape[2]} images of {cfg['data']['dataset']} (pretrain.task "
                          f"{sorted(blurred)[0]}); use a factor that divides {shape[1]}")
    if p["granularity"] == "filters" and not has_conv:
        raise ConfigError(f"config: prune.granularity filters: {cfg['model']['name']} has no conv layers; "
                          "use units (whole neurons) or weights")
    if cfg["rewind"]["reset_at_end"] and "continue" not in _listed(cfg["rewind"]["to"]):
        raise ConfigError("config: rewind.reset_at_end needs a continue lottery (it resets the masks that pruning "
                          "with continued training found); add continue to rewind.to or drop reset_at_end")
    for variant in cfg["instability"]["variants"]:
        if variant != "ticket" and not cfg["controls"][variant]:
            raise ConfigError(f"config: instability.variants has {variant} but controls.{variant} is false; "
                              f"set controls.{variant}: true or drop it from instability.variants")
    if cfg["classes"]["enabled"]:
        missing = [c for c in ("random_reinit", "small_dense") if not cfg["controls"][c]]
        if missing:
            raise ConfigError(f"config: classes.enabled needs controls.{missing[0]}: true (the ticket classes "
                              f"compare against it); turn it on or set classes.enabled: false")
    layers(cfg)
    model, dataset = cfg["model"]["name"], cfg["data"]["dataset"]
    takes, has = tuple(models.get(model).input_shape), tuple(data.source(dataset).shape)
    if takes != has:
        raise ConfigError(f"config: model.name {model} takes {'x'.join(map(str, takes))} images but data.dataset "
                          f"{dataset} has {'x'.join(map(str, has))}; pick a matching model or dataset")


def iterations(value, steps_per_epoch: int) -> int:
    """A step ("500it", "2ep") in iterations (lth.plan.steps)."""
    return Step.parse(value).iterations(steps_per_epoch)


def with_data(cfg: dict) -> None:
    """Cross-key checks that need the training set's size (read from the dataset's file
    headers, or the standard size where the files are missing): the validation split and one
    batch fit; every rewind point, instability point and milestone lies before the end of
    training and the warmup ends by it, all in iterations; a list's values stay distinct in
    iterations too (1ep and 916it are one rewind point with 916 steps per epoch)."""
    from lth.nn import data
    examples, where = data.train_size(cfg["data"]["dataset"], cfg["data_dir"])
    validation, batch = cfg["data"]["validation_size"], cfg["train"]["batch_size"]
    if validation + batch > examples:
        raise ConfigError(f"config: data.validation_size = {validation} with train.batch_size = {batch} does not fit "
                          f"the {examples} training examples ({where}); expected validation_size + batch_size "
                          f"<= {examples}")
    scored = cfg["prune"]["gradient"]["batches"] * cfg["prune"]["gradient"]["batch_size"]
    if cfg["prune"]["criterion"] == "gradient" and scored > examples - validation:
        raise ConfigError(f"config: prune.gradient asks for {scored} examples (batches x batch_size) but the training "
                          f"split has {examples - validation} ({where}); use fewer or smaller batches")
    per_epoch = epoch_steps(examples - validation, batch)  # the training split
    total = iterations(cfg["train"]["iterations"], per_epoch)
    at = f"(train.iterations = {cfg['train']['iterations']} = {total} iterations at {per_epoch} per epoch)"
    points = cfg["rewind"]["to"] if isinstance(cfg["rewind"]["to"], list) else [cfg["rewind"]["to"]]
    in_iterations = {}  # key -> {iteration: value as written}
    for key, values, fix in (("rewind.to", points, "rewind to an earlier step"),
                             ("instability.points", cfg["instability"]["points"], "rewind to an earlier step"),
                             ("train.milestones", cfg["train"]["milestones"], "drop it or train longer"),
                             ("trajectory.points", cfg["trajectory"]["points"], "record an earlier point"),
                             ("train.warmup", _listed(cfg["train"]["warmup"]), None)):
        seen = in_iterations[key] = {}
        for value in values:
            if value == "continue":
                continue
            k = 0 if value == "reset" else iterations(value, per_epoch)
            if fix is None:  # a warmup may last the whole training, not longer
                if k > total:
                    raise ConfigError(f"config: {key} = {value} = {k} iterations, longer than training {at}: the "
                                      "learning rate would never reach train.lr; shorten the warmup")
            elif k >= total:
                raise ConfigError(f"config: {key} has {value} = iteration {k}, not before the end of training "
                                  f"{at}; {fix}")
            if k in seen:
                raise ConfigError(f"config: {key} has {seen[k]} and {value}, both iteration {k} at {per_epoch} "
                                  "steps per epoch; list values must be distinct (one would run, or apply, twice)")
            seen[k] = value
    rewinds = in_iterations["rewind.to"]
    for k, value in in_iterations["instability.points"].items():
        if k and k in rewinds and rewinds[k] != value:  # one theta_k, one set of pairs: one spelling
            raise ConfigError(f"config: instability.points has {value} = iteration {k}, which is rewind.to "
                              f"{rewinds[k]}; write it {rewinds[k]} (spelled two ways it would train the same "
                              "pairs twice)")
    every = iterations(cfg["train"]["eval_every"], per_epoch)
    if every > total:
        raise ConfigError(f"config: train.eval_every = {cfg['train']['eval_every']} = {every} iterations, longer than "
                          f"training {at}: the network would be evaluated only at the end and early stopping "
                          "would mean nothing; evaluate at most every train.iterations")
    for value in cfg["summary"]["accuracy_at"]:
        at_it = iterations(value, per_epoch)
        if at_it > total or (at_it % every and at_it != total):
            raise ConfigError(f"config: summary.accuracy_at has {value}, not an evaluation point {at} with "
                              f"train.eval_every = {cfg['train']['eval_every']} = {every} iterations; use a "
                              "multiple of eval_every up to train.iterations")
    if cfg["telemetry"]["levels"]:
        for key, why in (("every", "it would record only the start and the end"),
                         ("early_every", "the early phase would have no point of its own"),
                         ("early_until", "the early phase would outlast the training")):
            value = cfg["telemetry"][key]
            if iterations(value, per_epoch) > total:
                raise ConfigError(f"config: telemetry.{key} = {value} = {iterations(value, per_epoch)} iterations, "
                                  f"longer than training {at}: {why}; use at most train.iterations")
