rule snapshot:
    """theta_k for late resetting: the dense run's first k iterations (same recipe, same
    data order, so the same weights the dense run has at k)."""
    input:
        unpack(stage_inputs("snapshot")),
    output:
        **lth_plan.output_patterns(ROOT, "snapshot"),
    params:
        spec=stage_spec("snapshot"),
        out=stage_dir,
        data_dir=data_dir_arg,
        checkpoint=checkpoint_args,
        device=device_arg,
    threads: config["threads"]
    resources:
        **TRAIN_RESOURCES,
    conda:
        "../envs/lth.yaml"
    log:
        "logs/snapshot/{id}.log",
    shell:
        "python -m lth snapshot --spec {params.spec:q} --model {input.model} "
        "--start {input.start} {params.data_dir} --threads {threads} {params.checkpoint} {params.device} "
        "--out {params.out} > {log} 2>&1"
