rule reinit:
    """Random-reinitialisation control: the level's mask on a fresh, seeded init."""
    input:
        unpack(stage_inputs("reinit")),
    output:
        **lth_plan.output_patterns(ROOT, "reinit"),
    params:
        spec=stage_spec("reinit"),
        out=stage_dir,
    conda:
        "../envs/lth.yaml"
    log:
        "logs/reinit/{id}.log",
    shell:
        "python -m lth reinit --spec {params.spec:q} --model {input.model} --mask {input.mask} "
        "--out {params.out} > {log} 2>&1"


rule randmask:
    """Random-pruning control: a random mask with the level's per-layer sparsity."""
    input:
        unpack(stage_inputs("randmask")),
    output:
        **lth_plan.output_patterns(ROOT, "randmask"),
    params:
        spec=stage_spec("randmask"),
        out=stage_dir,
    conda:
        "../envs/lth.yaml"
    log:
        "logs/randmask/{id}.log",
    shell:
        "python -m lth randmask --spec {params.spec:q} --model {input.model} --like {input.like} "
        "--out {params.out} > {log} 2>&1"


rule smalldense:
    """Small-dense baseline: the model family narrowed to the level's number of weights."""
    input:
        unpack(stage_inputs("smalldense")),
    output:
        **lth_plan.output_patterns(ROOT, "smalldense"),
    params:
        spec=stage_spec("smalldense"),
        out=stage_dir,
    conda:
        "../envs/lth.yaml"
    log:
        "logs/smalldense/{id}.log",
    shell:
        "python -m lth smalldense --spec {params.spec:q} --model {input.model} --like {input.like} "
        "--out {params.out} > {log} 2>&1"
