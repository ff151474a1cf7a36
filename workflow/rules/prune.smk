rule prune:
    """The next level's mask: prune a fraction of the surviving weights by magnitude."""
    input:
        unpack(stage_inputs("prune")),
    output:
        **lth_plan.output_patterns(ROOT, "prune"),
    params:
        spec=stage_spec("prune"),
        out=stage_dir,
        mask=optional_mask,
    conda:
        "../envs/lth.yaml"
    log:
        "logs/prune/{id}.log",
    shell:
        "python -m lth prune --spec {params.spec:q} --model {input.model} "
        "--weights {input.weights} {params.mask} --out {params.out} > {log} 2>&1"
