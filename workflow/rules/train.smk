rule train:
    """Train one level: the start weights with the level's mask held at zero."""
    input:
        unpack(stage_inputs("train")),
    output:
        **lth_plan.output_patterns(ROOT, "train"),
    params:
        spec=stage_spec("train"),
        out=stage_dir,
        mask=optional_mask,
        data_dir=data_dir_arg,
        checkpoint=checkpoint_args,
        device=device_arg,
    threads: config["threads"]
    resources:
        **TRAIN_RESOURCES,
    conda:
        "../envs/lth.yaml"
    log:
        "logs/train/{id}.log",
    shell:
        "python -m lth train --spec {params.spec:q} --model {input.model} "
        "--start {input.start} {params.mask} {params.data_dir} --threads {threads} {params.checkpoint} {params.device} "
        "--out {params.out} > {log} 2>&1"
