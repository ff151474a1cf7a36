"""Config files and `--config KEY=VALUE` strings, read as snakemake reads them, each
problem in one line: unreadable, not UTF-8, not YAML, YAML aliases, empty or not a mapping.
Torch-free."""
from __future__ import annotations

from pathlib import Path

import yaml

from lth.plan.config import ConfigError, merge


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
