"""Starts: the weights a training begins from. Either a `.pt` of full weights (the init's
weights, a control's or a perturbation's start) or, for a rewind, a reference: `start.json`
names the weights file and the mask whose product it is (theta ⊙ m costs no bytes of its
own, so a level stores one float copy, its trained weights). `load_start` reads both, for
every consumer; `python -m lth start` materialises a reference as a `.pt`. Numpy only.
"""
from __future__ import annotations

import os
from pathlib import Path

from lth.plan import registry
from lth.store import masks, ptfile, records
from lth.store.artifacts import ArtifactError, corrupt, read_json, write_json
from lth.store.weights import load_mask, load_weights, masked


# A rewind's start as a reference (start.json): which weights file and which mask make it.
START_FORMAT = 1
_REFERENCED = ("weights", "mask")  # what a reference names: the weights, then the mask applied to them


def write_start_reference(path, weights_path, mask_path) -> dict:
    """Write `path` (a rewind stage's start.json): the start is weights_path masked by
    mask_path. Each is recorded by its path relative to the results folder (the stage
    directory's grandparent: <results>/<kind>/<id>/<file>) and the size and sha256 its own
    stage's record holds (lth.store.records), so a reader can check it gets the same bytes."""
    path = Path(path)
    root = path.parent.parent.parent
    ref = {"format": START_FORMAT,
           "start": "weights masked by mask, pruned weights +0.0; `python -m lth start` writes it as a .pt"}
    for what, source in zip(_REFERENCED, (weights_path, mask_path)):
        source = Path(source)
        relative = Path(os.path.relpath(os.path.abspath(source), os.path.abspath(root)))
        if relative.parts[:1] == ("..",) or len(relative.parts) != 3:
            raise ArtifactError(f"{source} is not a stage file of the results folder {root}")
        entry = next((e for e in records.read(source.parent)["files"].values() if e["file"] == source.name), None)
        if entry is None:
            raise records.damaged(source.parent, f"{source.name} is not in its {registry.RECORD}")
        ref[what] = {"file": relative.as_posix(), "size": entry["size"], "sha256": entry["sha256"]}
    write_json(path, ref)
    return ref


def start_references(path) -> dict:
    """{"weights": (path, sha256), "mask": (path, sha256)} named by a start reference
    (start.json), checked for form only; paths resolved against its results folder."""
    path = Path(path)
    ref = read_json(path)
    root = path.parent.parent.parent
    try:
        if ref["format"] != START_FORMAT:
            raise corrupt(path, f"start reference format {ref['format']!r}, this code reads {START_FORMAT}")
        out = {}
        for what in _REFERENCED:
            relative = Path(ref[what]["file"])
            if relative.is_absolute() or ".." in relative.parts or len(relative.parts) != 3:
                raise corrupt(path, f"{what} file {relative} is not <kind>/<id>/<file> of a results folder")
            out[what] = (root / relative, ref[what]["sha256"])
    except (KeyError, TypeError) as exc:
        raise corrupt(path, f"not a start reference (needs format, weights.file/sha256, mask.file/sha256: "
                            f"{type(exc).__name__} {exc})") from None
    return out


def reference_problems(path) -> list[str]:
    """How a start reference disagrees with the records of the files it names: a named
    stage whose record is intact but holds other bytes (rebuilt since) makes the reference
    stale. An unreadable or missing record is the named stage's own damage, not listed here."""
    out = []
    for what, (target, sha) in start_references(path).items():
        try:
            record = records.read(target.parent)
        except ArtifactError:
            continue
        entry = next((e for e in record["files"].values() if e["file"] == target.name), None)
        if entry is None or entry["sha256"] != sha:
            out.append(f"{Path(path).name} names {what} {target} with sha256 {sha[:12]}, its record now "
                       f"holds {'no such file' if entry is None else entry['sha256'][:12]}")
    return out


def load_start(path, info: dict | None = None) -> dict:
    """The start weights of a training: a `.pt` of full weights as it is, or a reference
    (start.json) as its weights file masked by its mask, pruned weights +0.0 exactly as
    `masked` gives them. The named files are checked against their stages' records first
    (a damaged, missing or since-rebuilt one stops the job in one line). info: the model
    description to check shapes against (None: the mask against the weights' own shapes)."""
    path = Path(path)
    if path.suffix != ".json":
        return load_weights(path, info) if info is not None else ptfile.load(path)
    named = start_references(path)
    records.verify(target for target, _ in named.values())  # the bytes their records hold
    stale = reference_problems(path)
    if stale:
        raise corrupt(path, f"{stale[0]} (the reference is stale)")
    weights_path, mask_path = named["weights"][0], named["mask"][0]
    if info is not None:
        return masked(load_weights(weights_path, info), load_mask(mask_path, info))
    state, mask = ptfile.load(weights_path), masks.read(mask_path)
    wrong = [name for name, keep in mask.items() if name not in state or state[name].shape != keep.shape]
    if wrong:
        raise corrupt(mask_path, f"mask tensors {wrong} do not match the weights of {weights_path}")
    return masked(state, mask)
