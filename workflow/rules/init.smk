rule init:
    """theta_0: the model's seeded initial weights."""
    output:
        **lth_plan.output_patterns(ROOT, "init"),
    params:
        spec=stage_spec("init"),
        out=stage_dir,
    conda:
        "../envs/lth.yaml"
    log:
        "logs/init/{id}.log",
    shell:
        "python -m lth init --spec {params.spec:q} --out {params.out} > {log} 2>&1"
