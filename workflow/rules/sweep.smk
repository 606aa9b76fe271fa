# A sweep experiment: its sub-experiments' cubes and fits along a new dimension (a key of
# config.SWEEP_KEYS: width, strength or tikhonov). One rule per swept key (the figure's name holds the
# key), each constrained to its experiments.
for _key in SWEEP_KEYS:

    rule:
        name:
            f"sweep_{_key}"
        wildcard_constraints:
            exp=exp_regex([name for name, (key, _) in SWEEPS.items() if key == _key]),
        input:
            unpack(sweep_inputs),
        output:
            cube=R("{exp}/cube.nc"),
            fit=R("{exp}/fit.nc"),
            figure=report(R(f"{{exp}}/figures/sweep_{_key}.png"), caption="../report/sweep.rst", category="{exp}"),
        params:
            sweep=sweep_params,
            model=lambda wildcards: as_arg(family_model(CFG["experiments"][wildcards.exp]["model"])),
            outdir=R("{exp}/figures"),
        resources:
            **SMALL_JOB,
        log:
            R(f"{{exp}}/logs/sweep_{_key}.log"),
        benchmark:
            R(f"{{exp}}/benchmarks/sweep_{_key}.tsv"),
        conda:
            "../../envs/diffmem.yaml"
        shell:
            "diffmem sweep {params.sweep} --cubes {input.cubes} --fits {input.fits} --model {params.model}"
            " --dataset {input.dataset} --experiment {wildcards.exp} --out-cube {output.cube}"
            " --out-fit {output.fit} --outdir {params.outdir} > {log} 2>&1"
