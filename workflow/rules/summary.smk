def summary_levels(wildcards, input):
    stage = PLAN.get("summary", wildcards.id)
    return " ".join(f"{tid}:{input[f'level{i}_metrics']}:{input[f'level{i}_stats']}"
                    for i, tid in enumerate(stage.upstream["trains"]))


rule summary:
    """One row per level: weights remaining, early-stop iteration, accuracies; and the plot."""
    input:
        unpack(stage_inputs("summary")),
    output:
        table=lth_plan.output_patterns(ROOT, "summary")["table"],
        csv=lth_plan.output_patterns(ROOT, "summary")["csv"],
        plot=report(lth_plan.output_patterns(ROOT, "summary")["plot"],
                    caption="../report/accuracy.rst", category="Accuracy"),
        spec=lth_plan.output_patterns(ROOT, "summary")["spec"],
    params:
        spec=stage_spec("summary"),
        out=stage_dir,
        levels=summary_levels,
        py=sys.executable,
    log:
        "logs/summary/{id}.log",
    shell:
        "{params.py} -m lth summarize --spec {params.spec:q} --levels {params.levels} "
        "--out {params.out} > {log} 2>&1"
