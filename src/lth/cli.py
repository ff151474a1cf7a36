"""`python -m lth COMMAND`: `run MANIFEST` (what every workflow rule calls, lth.runtime.job), plus
user tools: plan (stage IDs of a config), summary (print a results table), verify (check a
results folder against its records), catalog (one table of every stage), rp (R_p of two
weight files), start (write a stage's start or trained weights as a dense .pt), fetch (download a dataset
where a network exists), check-config.
Torch is imported only by the stages that need it.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lth", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run one workflow stage from its manifest (what every rule calls)", add_help=False)
    p = sub.add_parser("rp", help="weight correlation R_p between any two weight files")
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--p", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.5])
    p.add_argument("--model", type=Path, help="model.json naming the prunable layers (default: tensors of rank >= 2)")
    p.add_argument("--mask", type=Path, help="a mask.parquet: rank each layer's surviving weights only")
    p.add_argument("--per-layer", action="store_true")
    for name, help_text in (("plan", "print the stages a config produces"),
                            ("check-config", "validate a config"),
                            ("summary", "print the summary table of a config's results")):
        p = sub.add_parser(name, help=help_text)
        # the config the workflow sees: `snakemake --configfile presets/X.yaml --config
        # results=R` reads config.yaml, then the preset, then R; so does
        # `python -m lth plan presets/X.yaml --config results=R`
        p.add_argument("config", nargs="*", default=[],
                       help="YAML config files merged in order over ./config.yaml, as snakemake's --configfile"
                       + (" (or a summary stage directory or results folder)" if name == "summary" else ""))
        p.add_argument("--config", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                       help="after the files: overrides exactly as snakemake's --config reads them "
                       "(KEY may also be dotted: prune.rate=0.3)")
        if name == "plan":
            p.add_argument("--list", action="store_true", help="also name every stage: kind, ID and directory")
        if name == "summary":
            p.add_argument("--figure", type=Path, metavar="PNG",
                           help="also draw the ticket against its controls (accuracy and early-stop iteration) there")
            p.add_argument("--curves", type=Path, metavar="PNG",
                           help="also draw the learning curves of the levels nearest LTH'19 Fig. 3's there")
            p.add_argument("--per-seed", action="store_true",
                           help="one row per training (each seed) instead of the mean ± std over seeds")
    p = sub.add_parser("verify", help="check every stage of a results folder against its record")
    p.add_argument("results", nargs="?", default="results", type=Path)
    p.add_argument("--repair", action="store_true",
                   help="remove the damaged stages, so that the next snakemake rebuilds them and what depends on them")
    p = sub.add_parser("catalog", help="one Parquet table of every stage in a results folder")
    p.add_argument("results", nargs="?", default="results", type=Path)
    p.add_argument("--out", type=Path, help="where to write it (default: RESULTS/catalog.parquet)")
    p = sub.add_parser("start", help="write a stage's start weights, or any weights file, as a dense .pt state dict "
                                     "(a rewind stores its start as a reference, a masked training packs its weights)")
    p.add_argument("start", type=Path, help="a rewind (or perturb, reinit) stage directory, its start file, "
                                            "or a weights.pt (a masked training's is packed: it is unpacked)")
    p.add_argument("-o", "--out", type=Path, help="the .pt to write (default: <file stem>-<stage ID>.pt here)")
    p = sub.add_parser("fetch", help="download a dataset (needs a network and torchvision)")
    p.add_argument("dataset")
    p.add_argument("directory")
    return parser


def _run(args) -> int:
    from lth.plan import build as plan_mod, config as config_mod, files as config_files
    if args.command == "rp":
        from lth.report import correlation
        from lth.store import masks, ptfile
        from lth.store.weights import read_model_info
        layers = read_model_info(args.model)["prunable"] if args.model else None
        mask = masks.read(args.mask) if args.mask else None
        rows = correlation.table(ptfile.load(args.a), ptfile.load(args.b), args.p, layers, mask)
        for row in rows:
            if args.per_layer or row["layer"] == "all":
                print(f"p={row['p']:<5g} {row['layer']:<24s} R_p={row['r_p']:.4f}")
        return 0
    if args.command == "verify":
        from lth.store import verify
        return verify.main(args.results, args.repair)
    if args.command == "catalog":
        from lth.report import catalog
        out = catalog.write(args.results, args.out)
        print(f"catalog: {out}")
        return 0
    if args.command == "start":
        return _write_start(args.start, args.out)
    if args.command == "fetch":
        from lth.nn import data
        print(f"{args.dataset}: files in {data.fetch(args.dataset, args.directory)}")
        return 0
    if args.command == "summary" and len(args.config) == 1 and Path(args.config[0]).is_dir():
        return _print_summary(Path(args.config[0]), figure=args.figure, per_seed=args.per_seed, curves=args.curves)
    files = _config_files(args.config)
    cfg = config_mod.load(files, config_files.parse_overrides(args.overrides))
    if args.command == "check-config":
        print(" + ".join(map(str, files)) + "".join(f" + {o}" for o in args.overrides) + ": valid")
        return 0
    plan = plan_mod.build(cfg)
    if args.command == "plan":
        _print_plan(plan, args.list)
        return 0
    if args.command == "summary":
        table_path = Path(plan.summary.output("table"))
        if not table_path.exists():
            print(f"error: no summary yet at {table_path}; run the workflow with this config first",
                  file=sys.stderr)
            return 1
        # the verdict's instability line: this config's own instability stage, when it finished
        analysed = Path(plan.instability.output("summary")) if plan.instability is not None else None
        return _print_summary(table_path.parent, instability=analysed, search=False, figure=args.figure,
                              curves=args.curves,
                              per_seed=args.per_seed)
    raise AssertionError(args.command)


def _write_start(given: Path, out: Path | None) -> int:
    """Materialise a start (lth.store.starts.load_start) as a dense .pt state dict: for a rewind's
    start.json, its weights file masked by its mask, byte for byte what the rewind stage
    wrote as start.pt before it stored a reference; for a packed weights file (a masked
    training's, a reinit's start), its tensors unpacked."""
    from lth.store import ptfile
    from lth.plan import registry
    from lth.store.starts import load_start
    path = given
    if given.is_dir():
        found = [given / f for f in ("start.json", "start.pt") if (given / f).is_file()]
        if not found:
            print(f"error: {given} holds no start.json or start.pt (a rewind, perturb or reinit stage directory)",
                  file=sys.stderr)
            return 2
        path = found[0]
    if not path.is_file():
        print(f"error: {path} does not exist", file=sys.stderr)
        return 2
    if (path.parent / registry.RECORD).is_file():  # a stage's own start: check it against its record too
        from lth.store import records
        records.verify([path])
    state = load_start(path)
    out = out or Path(f"{path.stem}-{path.parent.name}.pt")
    ptfile.save(out, state)
    print(f"{out}: the {'start' if path.stem == 'start' else 'weights'} of {path}, dense ({len(state)} tensors)")
    return 0


def _print_plan(plan, every: bool = False) -> None:
    """The lotteries level by level, the instability pairs and the final stages; then how
    many stages of each kind there are in all (snapshots, controls' starts and copies
    included), each named with `every`."""
    from collections import Counter

    from lth.plan import registry
    for run in plan.runs:
        print(f"{run.label}: init {run.levels[0]['train'].upstream['start']}")
        for level, stages_ in enumerate(run.levels):
            print(f"  level {level}: " + "  ".join(f"{k} {s.id}" for k, s in stages_.items()))
    for run in plan.runs:
        for e in run.pairs:
            print(f"{run.label}: instability level {e['level']} {e['variant']} k={e['k']} pair {e['pair']}: "
                  f"copies {e['path'].upstream['a']} {e['path'].upstream['b']}, path {e['path'].id}")
    for stages_ in plan.finals.values():
        for stage in stages_:
            print(f"{stage.kind} {stage.id} -> {stage.dir}")
    order = {kind.name: i for i, kind in enumerate(registry.kinds())}
    counts = Counter(stage.kind for stage in plan.stages.values())
    print(f"{len(plan.stages)} stages: " + ", ".join(f"{n} {kind}" for kind, n in sorted(
        counts.items(), key=lambda item: order.get(item[0], len(order)))) + ("" if every else " (--list names each)"))
    if every:
        for stage in sorted(plan.stages.values(), key=lambda s: (order.get(s.kind, len(order)), s.level or 0, s.id)):
            print(f"{stage.kind} {stage.id}" + ("" if stage.level is None else f" level {stage.level}")
                  + f" -> {stage.dir}")


def _config_files(given: list) -> list:
    """./config.yaml (the Snakefile's configfile, when it exists here) and then the given
    files, as snakemake merges `--configfile` over it."""
    base = Path("config.yaml")
    files = [Path(f) for f in given]
    if base.exists() and not any(f.exists() and f.samefile(base) for f in files):
        files.insert(0, base)
    return files or [base]


def _print_summary(where: Path, instability: Path | None = None, search: bool = True,
                   figure: Path | None = None, per_seed: bool = False, curves: Path | None = None) -> int:
    """Print a summary stage's table and its verdict (lth.report.verdict, computed from the table,
    so summaries made before the verdict existed get one too): `where` is its directory, or
    a results folder whose newest summary is printed (the others are listed). `instability`:
    the instability summary.csv of the same config; `search`: look for the instability
    stage of this summary in its results folder instead."""
    from lth.report import summary, verdict
    if (where / "summary.parquet").exists():
        found = [where]
    else:
        found = sorted((d for d in (where / "summary").glob("*") if (d / "summary.parquet").exists()),
                       key=lambda d: (d / "summary.parquet").stat().st_mtime, reverse=True)
    if not found:
        print(f"error: {where} holds no summary table (summary.parquet, or summary/<ID>/summary.parquet)",
              file=sys.stderr)
        return 1
    from lth.store.verify import summary_problems
    problems = summary_problems(found[0])
    if problems:
        print(f"error: the summary {found[0]} is built from damaged stages ({len(problems)}): {problems[0]}; run "
              f"`python -m lth verify {shlex.quote(str(found[0].parent.parent))} --repair`, then snakemake again",
              file=sys.stderr)
        return 2
    frame = summary.read_summary(found[0] / "summary.parquet")
    print(f"{found[0] / 'summary.parquet'}\n{summary.format_table(frame, per_seed)}")
    if search:
        instability = verdict.instability_for(found[0])
    analysed = verdict.read_instability(instability) if instability and verdict.intact(instability) else None
    spec = json.loads((found[0] / "spec.json").read_text()) if (found[0] / "spec.json").is_file() else {}
    chance = 1 / spec.get("settings", {}).get("num_classes", 10)  # the dataset's classes (cifar100: 100)
    print("\nverdict:" + "".join(f"\n  {line}" for line in verdict.lines(frame, analysed, chance=chance)))
    if analysed is not None:
        print(f"(instability from {instability})")
    if figure is not None:
        summary.overview(frame, figure)
        print(f"figure: {figure}")
    if curves is not None:  # the trainings' metrics beside the summary, in its results folder
        trains = found[0].parent.parent / "train"
        lines = summary.curves(frame, {tid: trains / tid / "metrics.parquet" for tid in frame.train_id})
        summary.plot_curves(lines, summary.curve_levels(frame), curves)
        print(f"learning curves: {curves}")
    for other in found[1:]:
        print(f"(older: {other})")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    from lth.store.artifacts import ArtifactError
    from lth.plan.config import ConfigError
    from lth.nn.data import DataError
    from lth.nn.devices import DeviceError
    from lth.nn.divergence import Diverged
    from lth.runtime.lifeline import Orphaned
    from lth.nn.numerics import NumericsError
    try:
        if argv[:1] == ["run"]:  # the job command: its own small parser (lth.runtime.job)
            from lth.runtime import job as jobs
            return jobs.main(argv[1:])
        return _run(_parser().parse_args(argv))
    except (ConfigError, DataError, ArtifactError, DeviceError, Diverged, Orphaned, NumericsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
