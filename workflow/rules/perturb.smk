rule perturb:
    """Early-phase perturbation of the rewound subnetwork (signs, magnitudes, permutations, noise)."""
    input:
        unpack(stage_inputs("perturb")),
    output:
        **lth_plan.output_patterns(ROOT, "perturb"),
    params:
        spec=stage_spec("perturb"),
        out=stage_dir,
        inputs=named_inputs,
    conda:
        "../envs/lth.yaml"
    log:
        "logs/perturb/{id}.log",
    shell:
        "python -m lth perturb --spec {params.spec:q} --inputs {params.inputs} --out {params.out} > {log} 2>&1"
