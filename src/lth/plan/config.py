"""Configuration: the JSON schema is the single source of keys, types, ranges and defaults.

Torch-free: the Snakefile imports this at parse time.
"""
from __future__ import annotations

import copy
import json
import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from lth.plan import canonical
from lth.plan.steps import Step

SCHEMA_PATH = Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config problem, phrased as one line that names the key and what is allowed."""


@lru_cache(maxsize=None)
def _schema_text(path: str) -> str:
    return Path(path).read_text()


def load_schema(path: Path | str = SCHEMA_PATH) -> dict:
    return yaml.safe_load(_schema_text(str(path)))


def fill_defaults(cfg: dict, schema: dict) -> dict:
    """A copy of cfg with every missing key set to its schema default, recursively."""
    out = copy.deepcopy(cfg)
    for key, sub in schema.get("properties", {}).items():
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        if sub.get("type") == "object" and isinstance(out.get(key), dict):
            out[key] = fill_defaults(out[key], sub)
    return out


def defaults(schema: dict | None = None) -> dict:
    """Every key's default, in canonical form (stage IDs omit settings equal to these)."""
    schema = schema or load_schema()
    return canonicalise(fill_defaults({}, schema), schema)


def _types(schema: dict) -> list:
    types = []
    for branch in schema.get("anyOf", [schema]):
        t = branch.get("type", [])
        types += [t] if isinstance(t, str) else t
    return types


def _is_step(schema: dict) -> bool:
    return any("(it|ep)" in branch.get("pattern", "") for branch in schema.get("anyOf", [schema]))


def canonicalise(cfg, schema: dict):
    """cfg (schema-valid) with every value in its one spelling (lth.plan.canonical): numbers by
    value, steps as "<count><unit>", lists marked `x-unordered` in the schema sorted."""
    if isinstance(cfg, dict):
        props = schema.get("properties", {})
        return {k: canonicalise(v, props.get(k, {})) for k, v in cfg.items()}
    if isinstance(cfg, list):
        items = next((b.get("items", {}) for b in schema.get("anyOf", [schema]) if b.get("type") == "array"), {})
        values = [canonicalise(v, items) for v in cfg]
        return canonical.as_set(values) if schema.get("x-unordered") else values
    if isinstance(cfg, (int, float)) and not isinstance(cfg, bool):
        cfg = canonical.number(cfg)
        if _is_step(schema) and isinstance(cfg, int):
            return _zero_word(canonical.step(cfg), schema)
        return cfg
    if isinstance(cfg, str) and _is_step(schema):
        try:
            return _zero_word(canonical.step(cfg), schema)
        except ValueError:
            return cfg  # a word the key also allows (rewind.to: reset, continue)
    return cfg


def _zero_word(step: str, schema: dict) -> str:
    """The word a key's schema gives step zero (`x-zero`), else the step."""
    return schema.get("x-zero", step) if step == "0it" else step


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _one_line(error: jsonschema.ValidationError) -> str:
    where = _key(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        prefix = where + "." if error.absolute_path else ""
        return (f"config: unknown key {', '.join(prefix + k for k in extra)}; "
                f"allowed keys{' in ' + where if error.absolute_path else ''}: {', '.join(allowed)}")
    allowed = error.schema.get("description", "")
    if not allowed and error.schema.get("type") == "object":
        allowed = f"a mapping with keys among {', '.join(sorted(error.schema.get('properties', {})))}"
    value = json.dumps(error.instance) if not isinstance(error.instance, dict) else "{...}"
    line = f"config: {where} = {value} is not allowed ({_reason(error)})"
    return f"{line}; expected {allowed}" if allowed else line


def _reason(error: jsonschema.ValidationError) -> str:
    """The message of the branch the value was meant for: for `anyOf: [number, list]` and
    1.5, "1.5 is greater than ... 1" rather than "not valid under any of the given schemas"."""
    meant = [e for e in error.context or () if e.validator != "type"]
    return meant[0].message if meant else error.message


_PARSERS = {"integer": int, "number": float, "boolean": lambda s: {"true": True, "false": False}[s.lower()],
            "null": lambda s: None if s.lower() in ("null", "none", "~") else int("x")}


def coerce_strings(cfg, schema: dict):
    """Snakemake's `--config key='{"a": 0.3}'` reads nested values as strings: turn a string
    into the number/boolean/null its key's schema asks for when it parses as one."""
    if isinstance(cfg, dict) and "properties" in schema:
        return {k: coerce_strings(v, schema["properties"].get(k, {})) for k, v in cfg.items()}
    branches = schema.get("anyOf", [schema])
    if isinstance(cfg, list):
        items = next((b["items"] for b in branches if b.get("type") == "array"), {})
        return [coerce_strings(v, items) for v in cfg]
    types = _types(schema)
    if isinstance(cfg, (int, float)) and not isinstance(cfg, bool) and "string" in types \
            and not {"integer", "number"} & set(types):
        return str(cfg)  # `--config results=2024`: snakemake reads a number; the key wants a name
    if isinstance(cfg, str):
        for name in ("integer", "number", "boolean", "null"):
            if name in types:
                try:
                    return _PARSERS[name](cfg)
                except (ValueError, KeyError):
                    pass
    return cfg


def validate(cfg: dict, schema: dict | None = None) -> dict:
    """Validate cfg against the schema and return it with defaults filled in.

    Raises ConfigError with one line naming the first offending key (in key order).
    """
    schema = schema or load_schema()
    if not isinstance(cfg, dict):
        raise ConfigError("config: the top level must be a mapping of keys to values")
    _check_keys(cfg)
    coerced = coerce_strings(cfg, schema)
    _check_finite(coerced, schema)
    filled = fill_defaults(coerced, schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(filled),
                    key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        raise ConfigError(_one_line(errors[0]))
    filled = canonicalise(filled, schema)
    _check_distinct(filled, schema)
    check_combination(filled)
    filled["results"] = _check_results(filled["results"])
    _check_size(filled)
    check_with_data(filled)
    return filled


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


def _check_keys(cfg: dict, path=()) -> None:
    """Every key a name: YAML reads unquoted 1, true, yes, on, null as values."""
    for key, value in cfg.items():
        if not isinstance(key, str):
            where = f" in {_key_of(path)}" if path else ""
            raise ConfigError(f"config: key {json.dumps(key, default=str)}{where} is not a name (YAML reads an unquoted "
                              "number, true/false, yes/no, on/off or null as a value); quote it, or use a "
                              "key from config.yaml")
        if isinstance(value, dict):
            _check_keys(value, (*path, key))


def _check_finite(cfg: dict, schema: dict) -> None:
    """NaN and infinities pass JSON schema range checks (nan > 0 is False, not an error) and
    no stage can use them: refuse every one, wherever it is."""
    for path, value in _walk(cfg):
        if isinstance(value, float) and not math.isfinite(value):
            allowed = _description(schema, list(path))
            raise ConfigError(f"config: {_key_of(path)} = {value} is not allowed (not a finite number)"
                              + (f"; expected {allowed}" if allowed else ""))


def _check_distinct(cfg: dict, schema: dict, path=()) -> None:
    """List values must be distinct once canonical ([1, 1.0], ["500", "500it"] are one value
    twice): a repeated seed or rate would run, and count, one experiment twice."""
    if isinstance(cfg, dict):
        for key, sub in cfg.items():
            _check_distinct(sub, schema, (*path, key))
    elif isinstance(cfg, list):
        seen = set()
        for value in cfg:
            text = canonical.canonical_json(value)
            if text in seen:
                raise ConfigError(f"config: {_key_of(path)} lists {json.dumps(value)} twice, once its canonical "
                                  "form is taken (1 = 1.0, 500 = 500it, 0ep = 0it; rewind.to 0it = reset); list values "
                                  "must be distinct (a repeated value would run and count one experiment twice)")
            seen.add(text)


def _check_results(results: str) -> str:
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


def _check_size(cfg: dict) -> None:
    """Bound the DAG before building it: the product of the list-valued keys times the
    stages per level, an upper estimate."""
    from lth.plan.ids import EXPANDABLE, perturbations
    lotteries = 1
    for section, key in EXPANDABLE:
        value = cfg[section][key]
        lotteries *= len(value) if isinstance(value, list) else 1
    per_level = 3 + 3 * sum(bool(cfg["controls"][c]) for c in ("random_reinit", "random_prune", "small_dense")) \
        + 2 * len(perturbations(cfg))
    pairs = 3 * cfg["instability"]["pairs"] * len(cfg["instability"]["levels"]) * \
        (len(cfg["instability"]["variants"]) + len(cfg["instability"]["points"]))
    estimate = lotteries * (2 + cfg["levels"] * per_level + pairs)
    if estimate > MAX_STAGES:
        raise ConfigError(f"config: this experiment would plan about {estimate:,} stages, more than the "
                          f"{MAX_STAGES:,} allowed; use fewer levels, list values or pairs, or split the sweep")


# Image shape (channels, height, width) each model takes and each dataset gives; models'
# input_shape attributes must agree (tests/test_models.py checks).
MODEL_INPUTS = {"lenet_300_100": (1, 28, 28)}
DATASET_SHAPES = {"fashion_mnist": (1, 28, 28), "mnist": (1, 28, 28), "cifar10": (3, 32, 32)}


def model_input(name: str) -> tuple:
    return MODEL_INPUTS.get(name, (3, 32, 32))


# Each model's smallest prunable tensor per pruning rate (conv layers: prune.conv_rate, other
# hidden layers: prune.rate, the output layer: prune.output_rate) as (name, weights): the
# first a layerwise schedule empties (tests/test_config.py checks them against the models).
SMALLEST_LAYERS = {
    "lenet_300_100": {"hidden": ("fc2.weight", 30000), "output": ("fc3.weight", 1000)},
    **{name: {"conv": ("convs.0.weight", 1728), "hidden": ("fc2.weight", 65536), "output": ("fc3.weight", 2560)}
       for name in ("conv2", "conv4", "conv6")},
    **{name: {"conv": ("features.0.weight", 1728), "output": ("fc.weight", 5120)} for name in ("vgg16", "vgg19")},
    "resnet20": {"conv": ("conv.weight", 432), "output": ("fc.weight", 640)},
    "resnet18": {"conv": ("conv.weight", 1728), "output": ("fc.weight", 5120)},
}


def emptied_at(weights: int, rate: float, levels: int) -> int | None:
    """The first level (1..levels) at which a layer of `weights` loses its last weight when
    each round prunes ceil(rate * survivors) of them (lth.nn.pruning.prune_count), or None."""
    from lth.nn.pruning import prune_count
    for level in range(1, levels + 1):
        weights -= prune_count(rate, weights)
        if weights <= 0:
            return level
    return None


def _check_layers(cfg: dict) -> None:
    """A layerwise schedule that empties a layer cuts the network in two: every later level
    would report a constant network's accuracy as a result. Refused, naming the level."""
    p = cfg["prune"]
    # global ranking prunes the output layer on its own (known in advance) and the rest
    # together (known only when it happens: the prune stage refuses an emptied layer then)
    layerwise = "layerwise" in (p["strategy"] if isinstance(p["strategy"], list) else [p["strategy"]])
    rate = max(p["rate"]) if isinstance(p["rate"], list) else p["rate"]
    rates = {"hidden": ("prune.rate", rate), "output": ("prune.output_rate", p["output_rate"]),
             "conv": ("prune.conv_rate", p["conv_rate"]) if p["conv_rate"] is not None else ("prune.rate", rate)}
    for role, (name, weights) in SMALLEST_LAYERS[cfg["model"]["name"]].items():
        if role != "output" and not layerwise:
            continue
        key, value = rates[role]
        level = emptied_at(weights, value, cfg["levels"])
        if level is not None:
            raise ConfigError(f"config: levels = {cfg['levels']} with {key} = {value} empties "
                              f"{name} ({weights:,} weights) at level {level}, cutting the network in two; "
                              f"use at most {level - 1} levels or a lower rate")


def check_combination(cfg: dict) -> None:
    """Cross-key checks the schema cannot express."""
    strategies = cfg["prune"]["strategy"] if isinstance(cfg["prune"]["strategy"], list) else [cfg["prune"]["strategy"]]
    if cfg["prune"]["conv_rate"] is not None and "global" in strategies:
        raise ConfigError("config: prune.conv_rate needs prune.strategy: layerwise (global ranking uses one "
                          "rate for all hidden layers); remove conv_rate or use layerwise")
    for variant in cfg["instability"]["variants"]:
        if variant != "ticket" and not cfg["controls"][variant]:
            raise ConfigError(f"config: instability.variants has {variant} but controls.{variant} is false; "
                              f"set controls.{variant}: true or drop it from instability.variants")
    if cfg["classes"]["enabled"]:
        missing = [c for c in ("random_reinit", "small_dense") if not cfg["controls"][c]]
        if missing:
            raise ConfigError(f"config: classes.enabled needs controls.{missing[0]}: true (the ticket classes "
                              f"compare against it); turn it on or set classes.enabled: false")
    _check_layers(cfg)
    model, dataset = cfg["model"]["name"], cfg["data"]["dataset"]
    if model_input(model) != DATASET_SHAPES[dataset]:
        shape = "x".join(map(str, model_input(model)))
        raise ConfigError(f"config: model.name {model} takes {shape} images but data.dataset {dataset} has "
                          f"{'x'.join(map(str, DATASET_SHAPES[dataset]))}; pick a matching model or dataset")


def iterations(value, steps_per_epoch: int) -> int:
    """A step ("500it", "2ep") in iterations: the one place epochs become iterations."""
    return Step.parse(value).iterations(steps_per_epoch)


def steps_per_epoch(train_examples: int, validation_size: int, batch_size: int) -> int:
    """Optimisation steps per epoch of the training split (the last partial batch dropped)."""
    return max(1, (train_examples - validation_size) // batch_size)


def check_with_data(cfg: dict) -> None:
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
    per_epoch = steps_per_epoch(examples, validation, batch)
    total = iterations(cfg["train"]["iterations"], per_epoch)
    at = f"(train.iterations = {cfg['train']['iterations']} = {total} iterations at {per_epoch} per epoch)"
    points = cfg["rewind"]["to"] if isinstance(cfg["rewind"]["to"], list) else [cfg["rewind"]["to"]]
    in_iterations = {}  # key -> {iteration: value as written}
    for key, values, fix in (("rewind.to", points, "rewind to an earlier step"),
                             ("instability.points", cfg["instability"]["points"], "rewind to an earlier step"),
                             ("train.milestones", cfg["train"]["milestones"], "drop it or train longer")):
        seen = in_iterations[key] = {}
        for value in values:
            if value == "continue":
                continue
            k = 0 if value == "reset" else iterations(value, per_epoch)
            if k >= total:
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
    warmup = iterations(cfg["train"]["warmup"], per_epoch)
    if warmup > total:
        raise ConfigError(f"config: train.warmup = {cfg['train']['warmup']} = {warmup} iterations, longer than "
                          f"training {at}: the learning rate would never reach train.lr; shorten the warmup")


def notes(cfg: dict) -> list[str]:
    """Warnings about a valid config: analysis levels beyond `levels` are skipped (so
    `--config levels=2` works with the default experiment's instability levels)."""
    out = []
    for section in ("instability", "perturb", "landscape"):
        beyond = [level for level in cfg[section]["levels"] or [] if level > cfg["levels"]]
        if beyond:
            out.append(f"note: {section}.levels {', '.join(map(str, beyond))} are beyond levels "
                       f"({cfg['levels']}) and are skipped")
    return out


def load(path: Path | str | list, overrides: dict | None = None) -> dict:
    """Read one YAML config file or several merged in order (later files win, nested dicts
    key by key: snakemake's `--configfile` over the Snakefile's config.yaml), merge
    overrides the same way (snakemake's `--config`), validate."""
    cfg: dict = {}
    for one in [path] if isinstance(path, (str, Path)) else path:
        cfg = layer(cfg, read_file(one), one)
    if overrides:
        cfg = layer(cfg, overrides, "--config")
    return validate(cfg)


class _NoAliases(yaml.SafeLoader):
    """YAML without aliases: `*name` can make a small file expand to billions of values
    (a config needs none)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(f"uses the alias *{event.anchor} at line {event.start_mark.line + 1}; "
                                 "aliases are not supported in config files: write the value out")
        return super().compose_node(parent, index)


def read_file(path) -> dict:
    """One config file's mapping, or one line saying why it is not one."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as error:
        raise ConfigError(f"config file {path}: cannot be read ({error.strerror}); "
                          "give the path of a YAML config such as config.yaml") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file {path}: not UTF-8 text (byte {error.start}); save it as UTF-8") from None
    try:
        loaded = yaml.load(text, Loader=_NoAliases)
    except yaml.YAMLError as error:
        problem = _yaml_problem(error) if getattr(error, "problem", None) else str(error)
        raise ConfigError(f"config file {path}: not valid YAML ({problem})") from None
    if loaded is None:  # as snakemake, which refuses an empty config file
        raise ConfigError(f"config file {path}: empty; write at least one key (see config.yaml), "
                          "or leave the file out")
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path}: must hold a mapping of keys (like config.yaml), "
                          f"not a {type(loaded).__name__}")
    return loaded


# Where and how to run, never what is computed: kept when a preset starts over (below), so a
# data_dir or results folder set in config.yaml still applies to `--configfile presets/X`.
EXECUTION_KEYS = ("results", "data_dir", "device", "threads", "deterministic", "checkpoint_every", "gpu_slots")
BASE_KEY = "base"


def layer(cfg: dict, loaded: dict, source) -> dict:
    """`loaded` merged over `cfg`. A file with `base: defaults` (every preset has it) starts
    from the schema's defaults instead: of what came before it only the execution keys stay,
    so a preset means the same experiment whatever config.yaml's default experiment is."""
    loaded = dict(loaded)
    base = loaded.pop(BASE_KEY, None)
    if base == "defaults":
        cfg = {key: value for key, value in cfg.items() if key in EXECUTION_KEYS}
    elif base is not None:
        raise ConfigError(f"{source}: {BASE_KEY}: {base!r} is not known; write `{BASE_KEY}: defaults` (start "
                          "from the schema's defaults, as presets do) or leave the key out (merge over config.yaml)")
    return merge(cfg, loaded)


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"{getattr(error, 'problem', None) or 'parse error'}{where}"


def _snakemake_value(text: str):
    """A --config VALUE exactly as snakemake reads it (snakemake.cli.parse_config): the first
    of int, float, True/False, YAML with every scalar left a string, str. Nested scalars stay
    strings here as there; validate() turns them into what their key's schema asks for."""
    if text == "":
        return None
    for parse in (int, float, _bool_word, _yaml_base):
        try:
            return parse(text)
        except Exception:
            continue
    return text


def _bool_word(text: str) -> bool:
    return {"True": True, "False": False}[text]


def _yaml_base(text: str):
    value = yaml.load(text, Loader=yaml.BaseLoader)
    if value is None:
        raise ValueError(text)
    return value


def parse_overrides(items: list[str]) -> dict:
    """`KEY=VALUE` strings as snakemake's `--config` reads them (the same parsers, the same
    quote stripping), where KEY may also be dotted (`prune.rate=0.3` is `prune={rate: 0.3}`)."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--config {item!r}: expected KEY=VALUE, e.g. results=elsewhere or prune.rate=0.3 "
                              "(config files go before --config)")
        try:
            node = _snakemake_value(value.strip("'\""))
        except yaml.YAMLError as error:
            raise ConfigError(f"--config {item!r}: the value is not valid YAML ({_yaml_problem(error)})") from None
        for part in reversed(key.split(".")):
            node = {part: node}
        out = merge(out, node)
    return out


def merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def get(cfg: dict, dotted: str) -> Any:
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node
