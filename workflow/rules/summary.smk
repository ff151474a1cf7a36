rule summary:
    """One row per level: weights remaining, early-stop iteration, accuracies; and the plot."""
    input:
        unpack(stage_inputs("summary")),
    output:
        table=lth_plan.output_patterns(ROOT, "summary")["table"],
        csv=lth_plan.output_patterns(ROOT, "summary")["csv"],
        replicates=lth_plan.output_patterns(ROOT, "summary")["replicates"],
        plot=report(lth_plan.output_patterns(ROOT, "summary")["plot"],
                    caption="../report/accuracy.rst", category="Accuracy",
                    labels={"figure": "test accuracy vs weights remaining", "lottery": "all lotteries"}),
        early_stop=report(lth_plan.output_patterns(ROOT, "summary")["early_stop"],
                          caption="../report/early_stop.rst", category="Accuracy",
                          labels={"figure": "early-stop iteration vs weights remaining", "lottery": "all lotteries"}),
        spec=lth_plan.output_patterns(ROOT, "summary")["spec"],
    params:
        spec=stage_spec("summary"),
        out=stage_dir,
        levels=summary_levels,
    conda:
        "../envs/lth.yaml"
    log:
        "logs/summary/{id}.log",
    shell:
        "python -m lth summarize --spec {params.spec:q} --levels {params.levels} "
        "--out {params.out} > {log} 2>&1"
