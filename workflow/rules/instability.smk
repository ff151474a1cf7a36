rule interpolate:
    """One instability pair: test and train error along the line between its two copies."""
    input:
        unpack(stage_inputs("interpolate")),
    output:
        **lth_plan.output_patterns(ROOT, "interpolate"),
    params:
        spec=stage_spec("interpolate"),
        out=stage_dir,
        inputs=named_inputs,
        data_dir=data_dir_arg,
        device=device_arg,
    threads: config["threads"]
    resources:
        **TRAIN_RESOURCES,
    conda:
        "../envs/lth.yaml"
    log:
        "logs/interpolate/{id}.log",
    shell:
        "python -m lth interpolate --spec {params.spec:q} --inputs {params.inputs} {params.data_dir} "
        "--threads {threads} {params.device} --out {params.out} > {log} 2>&1"


rule instability:
    """Instability (error barrier), stable and matching for every analysed network, and plots."""
    input:
        unpack(stage_inputs("instability")),
    output:
        table=lth_plan.output_patterns(ROOT, "instability")["table"],
        summary=report(lth_plan.output_patterns(ROOT, "instability")["summary"],
                       caption="../report/instability_table.rst", category="Instability",
                       labels={"figure": "instability table", "lottery": "all lotteries"}),
        by_alpha=report(lth_plan.output_patterns(ROOT, "instability")["by_alpha"],
                        caption="../report/error_vs_alpha.rst", category="Instability",
                        labels={"figure": "error vs alpha", "lottery": "all lotteries"}),
        by_k=report(lth_plan.output_patterns(ROOT, "instability")["by_k"],
                    caption="../report/instability_vs_k.rst", category="Instability",
                    labels={"figure": "instability vs k", "lottery": "all lotteries"}),
        by_remaining=report(lth_plan.output_patterns(ROOT, "instability")["by_remaining"],
                            caption="../report/instability_vs_remaining.rst", category="Instability",
                            labels={"figure": "instability vs weights remaining", "lottery": "all lotteries"}),
        spec=lth_plan.output_patterns(ROOT, "instability")["spec"],
    params:
        spec=stage_spec("instability"),
        out=stage_dir,
        inputs=named_inputs,
    conda:
        "../envs/lth.yaml"
    log:
        "logs/instability/{id}.log",
    shell:
        "python -m lth instability --spec {params.spec:q} --inputs {params.inputs} --out {params.out} > {log} 2>&1"
