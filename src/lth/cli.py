"""`python -m lth COMMAND`: the stage commands the workflow rules call, plus user tools.

Stage commands (called by rules): init, train, snapshot, prune, rewind, reinit, randmask,
smalldense, perturb, summarize, correlate, interpolate, instability, anatomy, classes.
User tools: plan (stage IDs of a config), summary (print a results table), fetch (download a
dataset where a network exists), check-config.
Torch is imported only by the commands that need it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _spec(text: str) -> dict:
    spec = json.loads(text)
    if not isinstance(spec, dict) or "kind" not in spec:
        raise SystemExit("error: --spec must be a stage spec JSON object (from lth.plan)")
    return spec


def _named(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, Path(path)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lth", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def stage(name, help_text):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--spec", type=_spec, required=True, help="the stage spec as JSON")
        p.add_argument("--out", type=Path, required=True, help="the stage directory")
        return p

    stage("init", "write theta_0")
    for name, help_text in (("train", "train one level"), ("snapshot", "the dense run's weights at the rewind point k")):
        p = stage(name, help_text)
        p.add_argument("--model", type=Path, required=True, help="the init stage's model.json")
        p.add_argument("--start", type=Path, required=True)
        if name == "train":
            p.add_argument("--mask", type=Path)
        p.add_argument("--data-dir")
        p.add_argument("--threads", type=int)
        p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
        p.add_argument("--checkpoint", type=Path, help="resumable checkpoint file (outside the outputs)")
        p.add_argument("--checkpoint-every", default="2000it")
    p = stage("prune", "next level's mask from trained weights")
    p.add_argument("--model", type=Path, required=True, help="the init stage's model.json")
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--mask", type=Path)
    p = stage("rewind", "next level's start weights")
    p.add_argument("--model", type=Path, required=True, help="the init stage's model.json")
    p.add_argument("--init", type=Path, required=True)
    p.add_argument("--mask", type=Path, required=True)
    p = stage("reinit", "random-reinit control: the mask on a fresh init")
    p.add_argument("--model", type=Path, required=True, help="the init stage's model.json")
    p.add_argument("--mask", type=Path, required=True)
    p = stage("randmask", "random-pruning control: a random mask like the level's")
    p.add_argument("--model", type=Path, required=True, help="the init stage's model.json")
    p.add_argument("--like", type=Path, required=True)
    p = stage("smalldense", "small-dense baseline: a narrower dense model of the mask's size")
    p.add_argument("--model", type=Path, required=True, help="the init stage's model.json")
    p.add_argument("--like", type=Path, required=True)
    p = stage("correlate", "R_p(theta_0, theta_T) of every ticket training, and its plots")
    p.add_argument("--trainings", nargs="+", required=True, metavar="ID:START:TRAINED:MODEL:STATS[:MASK]")
    p = sub.add_parser("rp", help="weight correlation R_p between any two weight files")
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--p", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.5])
    p.add_argument("--model", type=Path, help="model.json naming the prunable layers (default: tensors of rank >= 2)")
    p.add_argument("--mask", type=Path, help="a mask.parquet: rank each layer's surviving weights only")
    p.add_argument("--per-layer", action="store_true")
    for name, help_text in (("interpolate", "one instability pair: error along the path between its copies"),
                            ("instability", "instability, stable and matching over all pairs, and plots"),
                            ("perturb", "an early-phase perturbation of a rewound subnetwork"),
                            ("anatomy", "ticket anatomy of one lottery"),
                            ("classes", "ticket classes (jackpot, secondary prize) from the summary")):
        p = stage(name, help_text)
        p.add_argument("--inputs", nargs="+", required=True, metavar="NAME=PATH", type=_named)
        if name == "interpolate":
            p.add_argument("--data-dir")
            p.add_argument("--threads", type=int)
            p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p = stage("summarize", "the per-level summary table and plot")
    p.add_argument("--levels", nargs="+", required=True, metavar="ID:METRICS:STATS")

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
                       help="after the files: overrides as snakemake's --config takes them (VALUE is YAML; "
                       "unlike snakemake, KEY may be dotted: prune.rate=0.3)")
    p = sub.add_parser("fetch", help="download a dataset (needs a network and torchvision)")
    p.add_argument("dataset")
    p.add_argument("directory")
    return parser


def _run(args) -> int:
    from . import config as config_mod, plan as plan_mod
    if args.command in ("init", "train", "snapshot", "prune", "rewind", "reinit", "randmask", "smalldense"):
        from . import stages
        if args.command == "init":
            stages.run_init(args.spec, args.out)
        elif args.command in ("train", "snapshot"):
            stages.run_train(args.spec, args.model, args.start, getattr(args, "mask", None), args.out,
                             args.data_dir, args.threads, args.device, args.checkpoint, args.checkpoint_every)
        elif args.command == "prune":
            stages.run_prune(args.spec, args.model, args.weights, args.mask, args.out)
        elif args.command == "rewind":
            stages.run_rewind(args.spec, args.model, args.init, args.mask, args.out)
        elif args.command == "reinit":
            stages.run_reinit(args.spec, args.model, args.mask, args.out)
        elif args.command == "randmask":
            stages.run_randmask(args.spec, args.model, args.like, args.out)
        else:
            stages.run_smalldense(args.spec, args.model, args.like, args.out)
        return 0
    if args.command in ("interpolate", "instability", "perturb", "anatomy", "classes"):
        from . import analysis_stages, stages
        inputs = dict(args.inputs)
        if args.command == "interpolate":
            analysis_stages.run_interpolate(args.spec, inputs, args.out, args.data_dir, args.threads, args.device)
        elif args.command == "perturb":
            stages.run_perturb(args.spec, inputs, args.out)
        else:
            getattr(analysis_stages, f"run_{args.command}")(args.spec, inputs, args.out)
        return 0
    if args.command == "correlate":
        from . import analysis_stages
        fields = ("start", "trained", "model", "stats", "mask")
        trainings = {tid: dict(zip(fields, map(Path, rest)))
                     for tid, *rest in (item.split(":") for item in args.trainings)}
        analysis_stages.run_correlation(args.spec, trainings, args.out)
        return 0
    if args.command == "rp":
        from . import correlation, masks, ptfile
        from .stages import read_model_info
        layers = read_model_info(args.model)["prunable"] if args.model else None
        mask = masks.read(args.mask) if args.mask else None
        rows = correlation.table(ptfile.load(args.a), ptfile.load(args.b), args.p, layers, mask)
        for row in rows:
            if args.per_layer or row["layer"] == "all":
                print(f"p={row['p']:<5g} {row['layer']:<24s} R_p={row['r_p']:.4f}")
        return 0
    if args.command == "summarize":
        from . import summary
        from .artifacts import write_json
        paths = {tid: (Path(m), Path(s)) for tid, m, s in (item.split(":", 2) for item in args.levels)}
        frame = summary.table(args.spec["upstream"]["runs"], paths)
        summary.write(frame, args.out)
        write_json(args.out / "spec.json", args.spec)
        print(summary.format_table(frame))
        return 0
    if args.command == "summary" and len(args.config) == 1 and Path(args.config[0]).is_dir():
        return _print_summary(Path(args.config[0]))
    files = _config_files(args.config)
    cfg = config_mod.load(files, config_mod.parse_overrides(args.overrides))
    if args.command == "check-config":
        print(" + ".join(map(str, files)) + "".join(f" + {o}" for o in args.overrides) + ": valid")
        return 0
    plan = plan_mod.build(cfg)
    if args.command == "plan":
        for run in plan.runs:
            print(f"{run.label}: init {run.levels[0]['train'].upstream['start']}")
            for level, stages_ in enumerate(run.levels):
                print(f"  level {level}: " + "  ".join(f"{k} {s.id}" for k, s in stages_.items()))
        for run in plan.runs:
            for e in run.pairs:
                print(f"{run.label}: instability level {e['level']} {e['variant']} k={e['k']} pair {e['pair']}: "
                      f"copies {e['path'].upstream['a']} {e['path'].upstream['b']}, path {e['path'].id}")
        finals = [plan.summary, plan.correlation, *plan.anatomy, plan.instability, plan.classes]
        for stage in finals:
            if stage is not None:
                print(f"{stage.kind} {stage.id} -> {stage.dir}")
        return 0
    if args.command == "summary":
        table_path = Path(plan.summary.output("table"))
        if not table_path.exists():
            print(f"error: no summary yet at {table_path}; run the workflow with this config first",
                  file=sys.stderr)
            return 1
        return _print_summary(table_path.parent)
    if args.command == "fetch":
        from . import data
        print(f"{args.dataset}: files in {data.fetch(args.dataset, args.directory)}")
        return 0
    raise AssertionError(args.command)


def _config_files(given: list) -> list:
    """./config.yaml (the Snakefile's configfile, when it exists here) and then the given
    files, as snakemake merges `--configfile` over it."""
    base = Path("config.yaml")
    files = [Path(f) for f in given]
    if base.exists() and not any(f.exists() and f.samefile(base) for f in files):
        files.insert(0, base)
    return files or [base]


def _print_summary(where: Path) -> int:
    """Print a summary stage's table: `where` is its directory, or a results folder whose
    newest summary is printed (the others are listed)."""
    from . import summary
    if (where / "summary.parquet").exists():
        found = [where]
    else:
        found = sorted((d for d in (where / "summary").glob("*") if (d / "summary.parquet").exists()),
                       key=lambda d: (d / "summary.parquet").stat().st_mtime, reverse=True)
    if not found:
        print(f"error: {where} holds no summary table (summary.parquet, or summary/<ID>/summary.parquet)",
              file=sys.stderr)
        return 1
    print(f"{found[0] / 'summary.parquet'}\n{summary.format_table(summary.read_summary(found[0] / 'summary.parquet'))}")
    for other in found[1:]:
        print(f"(older: {other})")
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from .artifacts import ArtifactError
    from .config import ConfigError
    from .data import DataError
    try:
        return _run(args)
    except (ConfigError, DataError, ArtifactError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
