"""docs/configuration.md is generated from the config schema (tools/config_docs.py, `make docs`):
it must be what the generator renders now, and it must name every key."""
import importlib.util
from pathlib import Path

from lth.plan.config import defaults, load_schema

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "configuration.md"


def _generator():
    spec = importlib.util.spec_from_file_location("config_docs", ROOT / "tools" / "config_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _leaves(value, prefix=""):
    if isinstance(value, dict) and value:
        for key, sub in value.items():
            yield from _leaves(sub, f"{prefix}.{key}" if prefix else key)
    else:
        yield prefix


def test_configuration_page_is_what_the_schema_renders():
    generator = _generator()
    assert PAGE.read_text(encoding="utf-8") == generator.render(load_schema()), \
        "docs/configuration.md is out of date; run make docs"
    assert generator.main(["--check"]) == 0


def test_configuration_page_names_every_key_of_the_defaults():
    page = PAGE.read_text(encoding="utf-8")
    keys = list(_leaves(defaults(load_schema())))
    assert len(keys) > 40 and {"results", "train.lr", "prune.rate", "instability.levels"} <= set(keys)
    missing = [key for key in keys if f"### `{key}`" not in page]
    assert missing == []
