rule correlation:
    """R_p(theta_0, theta_T) of every ticket training (Liu et al. 2021), with its plots."""
    input:
        unpack(stage_inputs("correlation")),
    output:
        table=lth_plan.output_patterns(ROOT, "correlation")["table"],
        by_p=report(lth_plan.output_patterns(ROOT, "correlation")["by_p"],
                    caption="../report/rp_vs_p.rst", category="Weight correlation",
                    labels={"figure": "R_p vs p", "lottery": "all lotteries"}),
        by_remaining=report(lth_plan.output_patterns(ROOT, "correlation")["by_remaining"],
                            caption="../report/rp_vs_remaining.rst", category="Weight correlation",
                            labels={"figure": "R_p vs weights remaining", "lottery": "all lotteries"}),
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


rule anatomy:
    """Ticket anatomy of one lottery: survivors' initial values, distance moved, connectivity."""
    input:
        unpack(stage_inputs("anatomy")),
    output:
        table=lth_plan.output_patterns(ROOT, "anatomy")["table"],
        init_hist=report(lth_plan.output_patterns(ROOT, "anatomy")["init_hist"],
                         caption="../report/init_histograms.rst", category="Ticket anatomy",
                         labels=figure_labels("anatomy", "initial values of survivors")),
        distance=report(lth_plan.output_patterns(ROOT, "anatomy")["distance"],
                        caption="../report/distance.rst", category="Ticket anatomy",
                        labels=figure_labels("anatomy", "distance moved")),
        connectivity=report(lth_plan.output_patterns(ROOT, "anatomy")["connectivity"],
                            caption="../report/connectivity.rst", category="Ticket anatomy",
                            labels=figure_labels("anatomy", "connectivity")),
        spec=lth_plan.output_patterns(ROOT, "anatomy")["spec"],
    params:
        spec=stage_spec("anatomy"),
        out=stage_dir,
        inputs=named_inputs,
    conda:
        "../envs/lth.yaml"
    log:
        "logs/anatomy/{id}.log",
    shell:
        "python -m lth anatomy --spec {params.spec:q} --inputs {params.inputs} --out {params.out} > {log} 2>&1"


rule classes:
    """Ticket classes (Ma et al. 2021): the five conditions and the prize of every pruned level."""
    input:
        unpack(stage_inputs("classes")),
    output:
        table=report(lth_plan.output_patterns(ROOT, "classes")["table"],
                     caption="../report/classes_table.rst", category="Ticket classes",
                     labels={"figure": "conditions table", "lottery": "all lotteries"}),
        plot=report(lth_plan.output_patterns(ROOT, "classes")["plot"],
                    caption="../report/classes.rst", category="Ticket classes",
                    labels={"figure": "conditions and prizes", "lottery": "all lotteries"}),
        spec=lth_plan.output_patterns(ROOT, "classes")["spec"],
    params:
        spec=stage_spec("classes"),
        out=stage_dir,
        inputs=named_inputs,
    conda:
        "../envs/lth.yaml"
    log:
        "logs/classes/{id}.log",
    shell:
        "python -m lth classes --spec {params.spec:q} --inputs {params.inputs} --out {params.out} > {log} 2>&1"
