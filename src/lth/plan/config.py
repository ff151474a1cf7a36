"""Configuration: the JSON schema (workflow/schemas/config.schema.yaml) is the single source
of keys, types, ranges, defaults and descriptions; the declarations complete it when it is
loaded (`load_schema`): the names of models, datasets and pruning strategies (`x-registry`),
each strategy's own settings and each stage kind's own config section. Config files and
`--config` strings are read in lth.plan.files, cross-key checks are in lth.plan.checks.

Torch-free: the Snakefile imports this at parse time.
"""
from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path

import jsonschema
import yaml

from lth.plan import canonical

SCHEMA_PATH = Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "config.schema.yaml"

class ConfigError(ValueError):
    """A config problem, phrased as one line that names the key and what is allowed."""


@lru_cache(maxsize=None)
def _schema_text(path: str) -> str:
    return Path(path).read_text()


def raw_schema() -> dict:
    """The schema file as written (no declarations added): what execution keys read at job start."""
    return _parsed(str(SCHEMA_PATH))


@lru_cache(maxsize=4)
def _parsed(path: str) -> dict:
    return yaml.safe_load(_schema_text(path))


def load_schema(path: Path | str = SCHEMA_PATH) -> dict:
    """The schema with what the declarations add (a fresh copy: callers may change it)."""
    from lth.plan import plugins
    plugins.load()
    return copy.deepcopy(_completed(str(path), _declared()))


def _declared() -> tuple:
    """What the declarations add to the schema, as a hashable key for the cache."""
    from lth.nn import data
    from lth.plan import models, registry, strategies
    return (tuple((m, json.dumps(models.get(m).settings, sort_keys=True)) for m in models.names()),
            tuple(data.names()),
            tuple((s, json.dumps(strategies.get(s).settings, sort_keys=True)) for s in strategies.names()),
            tuple(sorted((k.name, json.dumps(k.config, sort_keys=True)) for k in registry.kinds() if k.config)))


@lru_cache(maxsize=8)
def _completed(path: str, declared: tuple) -> dict:
    from lth.nn import data
    from lth.plan import models, registry, strategies
    schema = yaml.safe_load(_schema_text(path))
    names = {"models": [f"{m} ({'x'.join(map(str, models.get(m).input_shape))})" for m in models.names()],
             "datasets": [f"{d} ({'x'.join(map(str, data.source(d).shape))})" for d in data.names()],
             "strategies": [f"{s} ({strategies.get(s).description})" if strategies.get(s).description else s
                            for s in strategies.names()]}
    allowed = {"models": models.names(), "datasets": data.names(), "strategies": strategies.names()}
    _fill_registries(schema, names, allowed)
    prune = schema["properties"]["prune"]["properties"]
    for name in strategies.names():
        own = strategies.get(name).settings
        if own:
            prune[name] = {"type": "object", "additionalProperties": False, "default": {}, "properties": own,
                           "description": f"settings of the {name} pruning strategy (lth.plan.strategies)"}
    model = schema["properties"]["model"]["properties"]
    for name in models.names():  # each model's own settings, model.<key> (one schema per key)
        for key, sub in models.get(name).settings.items():
            if model.setdefault(key, sub) != sub:
                raise ValueError(f"model {name}: setting model.{key} is declared differently by another model")
    for kind in sorted(registry.kinds(), key=lambda k: k.name):  # by name: import order must not matter
        for section, sub in kind.config.items():
            known = schema["properties"].get(section)
            if known is not None and known != sub:
                raise ValueError(f"stage kind {kind.name}: config section {section!r} exists already")
            schema["properties"][section] = sub
    return schema


def _fill_registries(node, names: dict, allowed: dict) -> None:
    """`x-registry: models` (datasets, strategies): the declared names as the key's enum
    (its string branch and its list's items) and in its description ("{names}")."""
    if isinstance(node, dict):
        which = node.get("x-registry")
        if which:
            for branch in node.get("anyOf", [node]):
                target = branch.get("items", branch) if branch.get("type") == "array" else branch
                target["enum"] = list(allowed[which])
            if "description" in node:
                node["description"] = node["description"].replace("{names}", ", ".join(names[which]))
        for value in node.values():
            _fill_registries(value, names, allowed)
    elif isinstance(node, list):
        for value in node:
            _fill_registries(value, names, allowed)


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
    from lth.plan import checks
    checks.keys_are_names(cfg)
    coerced = coerce_strings(cfg, schema)
    checks.finite(coerced, schema)
    filled = fill_defaults(coerced, schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(filled),
                    key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        raise ConfigError(_one_line(errors[0]))
    filled = canonicalise(filled, schema)
    checks.distinct(filled, schema)
    checks.combination(filled)
    filled["results"] = checks.results_folder(filled["results"])
    checks.size(filled)
    checks.with_data(filled)
    return filled


def notes(cfg: dict) -> list[str]:
    """Warnings about a valid config: analysis levels beyond `levels` are skipped (so
    `--config levels=2` works with the default experiment's instability levels), for every
    section with a `levels` list of its own (a new analysis's too)."""
    out = []
    sections = [name for name, sub in load_schema()["properties"].items() if "levels" in sub.get("properties", {})]
    for section in sections:
        beyond = [level for level in cfg[section]["levels"] or [] if level > cfg["levels"]]
        if beyond:
            out.append(f"note: {section}.levels {', '.join(map(str, beyond))} are beyond levels "
                       f"({cfg['levels']}) and are skipped")
    return out


def load(path: Path | str | list, overrides: dict | None = None) -> dict:
    """Read one YAML config file or several merged in order (later files win, nested dicts
    key by key: snakemake's `--configfile` over the Snakefile's config.yaml), merge
    overrides the same way (snakemake's `--config`), validate."""
    from lth.plan import files
    cfg: dict = {}
    for one in [path] if isinstance(path, (str, Path)) else path:
        cfg = layer(cfg, files.read_file(one), one)
    if overrides:
        cfg = layer(cfg, overrides, "--config")
    return validate(cfg)


BASE_KEY = "base"


def execution_keys(schema: dict | None = None) -> list[str]:
    """Where and how to run, never what is computed (`x-execution` in the schema, top level):
    kept when a preset starts over (`layer`), so a data_dir or results folder set in
    config.yaml still applies to `--configfile presets/X`."""
    schema = schema or load_schema()
    return [key for key, sub in schema["properties"].items() if sub.get("x-execution")]


def layer(cfg: dict, loaded: dict, source) -> dict:
    """`loaded` merged over `cfg`. A file with `base: defaults` (every preset has it) starts
    from the schema's defaults instead: of what came before it only the execution keys stay,
    so a preset means the same experiment whatever config.yaml's default experiment is."""
    loaded = dict(loaded)
    base = loaded.pop(BASE_KEY, None)
    if base == "defaults":
        kept = execution_keys()
        cfg = {key: value for key, value in cfg.items() if key in kept}
    elif base is not None:
        raise ConfigError(f"{source}: {BASE_KEY}: {base!r} is not known; write `{BASE_KEY}: defaults` (start "
                          "from the schema's defaults, as presets do) or leave the key out (merge over config.yaml)")
    return merge(cfg, loaded)


def merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
