"""Write docs/configuration.md, the configuration reference, from the config JSON schema.

    python tools/config_docs.py           # (re)write docs/configuration.md  (`make docs`)
    python tools/config_docs.py --check   # exit 1 when the page differs from the schema's rendering

The schema is the one source of every key's type, default, allowed values and description;
it is read only through `lth.plan.config.load_schema` (which may add enums, such as the
registered models, to what the YAML file says). The page is a pure function of the schema:
the same schema gives a byte-identical page.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lth.plan.config import load_schema  # noqa: E402

PAGE = ROOT / "docs" / "configuration.md"
OUT_OF_DATE = "docs/configuration.md is out of date; run make docs"
TOP_LEVEL = "Top-level keys"
SIMPLE_PATTERN = 40  # longer patterns (or ones with lookarounds) are left to the description


def _code(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
    tick = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{tick}{pad}{text}{pad}{tick}"


def _value(value) -> str:
    """A default or enum value as it would be written in YAML/JSON (strings quoted)."""
    return _code(json.dumps(value, sort_keys=True, ensure_ascii=False))


def _branches(node: dict) -> list[dict]:
    return node.get("anyOf", [node])


def _type_names(node: dict) -> list[str]:
    t = node.get("type", [])
    return [t] if isinstance(t, str) else list(t)


def _type_word(name: str, node: dict) -> str:
    if name == "array":
        items = node.get("items", {})
        inner = " or ".join(_type_names(items)) or "any"
        return f"list of {inner}"
    return name


def types(node: dict) -> str:
    words = []
    for branch in _branches(node):
        for name in _type_names(branch):
            word = _type_word(name, branch)
            if word not in words:
                words.append(word)
    return ", or ".join(words) if any(w.startswith("list") for w in words) and len(words) > 1 \
        else " or ".join(words) or "any"


def list_valued(node: dict) -> str:
    kinds = [name == "array" for branch in _branches(node) for name in _type_names(branch)]
    if not any(kinds):
        return "no"
    others = {name for branch in _branches(node) for name in _type_names(branch)} - {"array"}
    if others == {"null"}:
        return "always (a list, or null)"
    if all(kinds):
        return "always (the value is a list)"
    return "yes (a single value or a list)"


def _number(x) -> str:
    return json.dumps(x)


def _range(node: dict) -> str | None:
    low = ("minimum", ">=") if "minimum" in node else ("exclusiveMinimum", ">") \
        if "exclusiveMinimum" in node else None
    high = ("maximum", "<=") if "maximum" in node else ("exclusiveMaximum", "<") \
        if "exclusiveMaximum" in node else None
    if low and high:
        lo_op = "<=" if low[1] == ">=" else "<"
        return f"{_number(node[low[0]])} {lo_op} x {high[1]} {_number(node[high[0]])}"
    if low:
        return f"x {low[1]} {_number(node[low[0]])}"
    if high:
        return f"x {high[1]} {_number(node[high[0]])}"
    return None


def _simple(pattern: str) -> bool:
    return len(pattern) <= SIMPLE_PATTERN and "(?" not in pattern


def _constraints(node: dict, numeric: bool) -> list[str]:
    """What one schema branch (or a list's items) allows, in short phrases (all must hold)."""
    out = []
    if "enum" in node:
        out.append("one of " + ", ".join(_value(v) for v in node["enum"]))
    names = _type_names(node)
    mixed = numeric and "string" in names  # `type: [string, integer]`: a range or a pattern
    either = []
    if numeric:
        r = _range(node)
        if r:
            number = "integers" if "integer" in names else "numbers"
            either.append(f"{number} {_code(r)}" if mixed else _code(r))
    if "multipleOf" in node.get("not", {}):
        out.append(f"not a multiple of {_number(node['not']['multipleOf'])}")
    if "pattern" in node:
        pattern = node["pattern"]
        either.append(f"strings matching {_code(pattern)}" if _simple(pattern)
                      else "strings in the form the description gives")
    if either:
        out.insert(1 if "enum" in node else 0, " or ".join(either))
    if "minLength" in node:
        out.append(f"at least {node['minLength']} character{'s' if node['minLength'] != 1 else ''}")
    return out


def _list_constraints(node: dict) -> list[str]:
    out = []
    if "minItems" in node:
        out.append(f"at least {node['minItems']} item{'s' if node['minItems'] != 1 else ''}")
    if "maxItems" in node:
        out.append(f"at most {node['maxItems']} items")
    if node.get("uniqueItems"):
        out.append("no repeats")
    return out


def allowed(node: dict) -> list[str]:
    """One line per schema branch: what values of that type the key accepts."""
    lines = []
    for branch in _branches(node):
        names = _type_names(branch)
        numeric = bool({"integer", "number"} & set(names))
        if "array" in names:
            items = branch.get("items", {})
            item_numeric = bool({"integer", "number"} & set(_type_names(items)))
            parts = _list_constraints(branch)
            inner = _constraints(items, item_numeric)
            if inner:
                parts.append("each item: " + "; ".join(inner))
            scalar = _constraints(branch, numeric)  # `type: [array, null]` and the like
            if parts or scalar:
                lines.append("list: " + "; ".join(parts + scalar))
            continue
        parts = _constraints(branch, numeric)
        if parts:
            lines.append("; ".join(parts))
    return lines


def _notes(node: dict) -> list[str]:
    out = []
    if node.get("x-unordered"):
        out.append("a list's order means nothing: it is sorted before hashing")
    zero = node.get("x-zero")
    if zero is not None:
        out.append(f"step zero (`0it`, `0ep`) is written {_value(zero)}")
    return out


def _is_section(node: dict) -> bool:
    return "object" in _type_names(node) and "properties" in node


def _entry(name: str, node: dict) -> list[str]:
    lines = [f"### `{name}`", ""]
    if node.get("x-execution"):
        lines += ["*execution only (not in any stage ID)*", ""]
    lines.append(f"- type: {types(node)}")
    if "default" in node:
        lines.append(f"- default: {_value(node['default'])}")
    else:
        lines.append("- default: none")
    rules = allowed(node)
    if len(rules) == 1:
        lines.append(f"- allowed: {rules[0]}")
    elif rules:
        lines.append("- allowed:")
        lines += [f"  - {rule}" for rule in rules]
    lines.append(f"- list-valued: {list_valued(node)}")
    for note in _notes(node):
        lines.append(f"- {note}")
    description = " ".join(str(node.get("description", "")).split())
    if description:
        lines += ["", description]
    lines.append("")
    return lines


def _walk(prefix: str, node: dict) -> list[str]:
    """Entries for every key under an object node, depth first, in schema order."""
    lines = []
    for key, sub in node.get("properties", {}).items():
        name = f"{prefix}.{key}" if prefix else key
        if _is_section(sub):
            if sub.get("description") or sub.get("x-execution"):
                lines += _entry(name, sub)
            lines += _walk(name, sub)
        else:
            lines += _entry(name, sub)
    return lines


def _anchor(title: str) -> str:
    return "".join(c for c in title.lower().replace(" ", "-") if c.isalnum() or c in "-_")


def render(schema: dict) -> str:
    """The whole page, as text."""
    props = schema.get("properties", {})
    top = {k: v for k, v in props.items() if not _is_section(v)}
    sections = {k: v for k, v in props.items() if _is_section(v)}
    titles = ([TOP_LEVEL] if top else []) + list(sections)

    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by tools/config_docs.py from the config schema; do not edit by hand. -->",
        "",
        "This page is generated by `tools/config_docs.py` from the config schema,",
        "`workflow/schemas/config.schema.yaml` as `lth.plan.config.load_schema` completes it",
        "(with the declared models, datasets, pruning strategies and stage kinds). Run `make docs`",
        "after changing either; `make test` fails while the page is out of date. Do not edit it",
        "by hand.",
        "",
    ]
    description = " ".join(str(schema.get("description", "")).split())
    if description:
        lines += [description, ""]
    lines += [
        "Set keys in `config.yaml`, in a file passed with `--configfile`, or with",
        "`--config KEY=VALUE` (nested values as YAML/JSON, merged key by key); a key left out",
        "takes its default. For each key: its type, its default (as YAML/JSON), the values it",
        "accepts, and whether it may be a list (a list-valued key runs one lottery or replicate",
        "per value, see [usage](usage.md)). Ranges are written for a value `x`.",
        "",
        "Sections: " + " · ".join(f"[{t if t == TOP_LEVEL else '`' + t + '`'}](#{_anchor(t)})"
                                  for t in titles),
        "",
    ]
    if top:
        lines += [f"## {TOP_LEVEL}", ""]
        lines += [line for key, sub in top.items() for line in _entry(key, sub)]
    for key, sub in sections.items():
        lines += [f"## {key}", ""]
        if sub.get("x-execution"):
            lines += ["*execution only (not in any stage ID)*", ""]
        section_description = " ".join(str(sub.get("description", "")).split())
        if section_description:
            lines += [section_description, ""]
        lines += _walk(key, sub)
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when docs/configuration.md differs from the schema's rendering")
    args = parser.parse_args(argv)
    text = render(load_schema())
    if args.check:
        current = PAGE.read_text(encoding="utf-8") if PAGE.is_file() else None
        if current != text:
            print(OUT_OF_DATE, file=sys.stderr)
            return 1
        return 0
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    if not PAGE.is_file() or PAGE.read_text(encoding="utf-8") != text:
        with open(PAGE, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
