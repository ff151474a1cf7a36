# One rule per registered stage kind (lth.plan.registry): the same fixed-size command for all,
# `python -m lth run MANIFEST`; the stage's settings and paths are in the manifest.
for _kind in lth_registry.kinds():

    rule:
        name:
            _kind.name
        input:
            unpack(stage_inputs(_kind.name)),
        output:
            **stage_outputs(_kind),
        params:
            python=PYTHON,
            src=SRC,
            manifest=manifest(_kind.name),
            execution=EXECUTION_FLAGS,
        threads: config["threads"] if _kind.resources == "train" else 1
        group:
            job_group
        resources:
            **RESOURCES[_kind.resources],
        log:
            # this attempt's output; the job appends every attempt to {id}.log (lth.runtime.job)
            f"{ROOT}/logs/{_kind.name}/{{id}}.attempt.log",
        shell:
            "PYTHONPATH={params.src:q}${{PYTHONPATH:+:$PYTHONPATH}} "
            "{params.python:q} -m lth run {params.manifest:q} --threads {threads} {params.execution} "
            "> {log:q} 2>&1"
