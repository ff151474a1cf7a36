rule rewind:
    """The next level's start weights: theta_0 with the new mask applied."""
    input:
        unpack(stage_inputs("rewind")),
    output:
        **lth_plan.output_patterns(ROOT, "rewind"),
    params:
        spec=stage_spec("rewind"),
        out=stage_dir,
    conda:
        "../envs/lth.yaml"
    log:
        "logs/rewind/{id}.log",
    shell:
        "python -m lth rewind --spec {params.spec:q} --model {input.model} "
        "--init {input.init} --mask {input.mask} --out {params.out} > {log} 2>&1"
