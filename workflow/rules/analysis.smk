rule correlation:
    """R_p(theta_0, theta_T) of every ticket training (Liu et al. 2021), with its plots."""
    input:
        unpack(stage_inputs("correlation")),
    output:
        table=lth_plan.output_patterns(ROOT, "correlation")["table"],
        by_p=report(lth_plan.output_patterns(ROOT, "correlation")["by_p"],
                    caption="../report/rp_vs_p.rst", category="Weight correlation"),
        by_remaining=report(lth_plan.output_patterns(ROOT, "correlation")["by_remaining"],
                            caption="../report/rp_vs_remaining.rst", category="Weight correlation"),
        spec=lth_plan.output_patterns(ROOT, "correlation")["spec"],
    params:
        spec=stage_spec("correlation"),
        out=stage_dir,
        trainings=correlation_trainings,
    conda:
        "../envs/lth.yaml"
    log:
        "logs/correlation/{id}.log",
    shell:
        "python -m lth correlate --spec {params.spec:q} --trainings {params.trainings} "
        "--out {params.out} > {log} 2>&1"
