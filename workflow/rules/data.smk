rule prepare_data:
    output:
        R("{exp}/data/dataset.npz"),
    params:
        data=data_slice,
    resources:
        mem_mb=resource("small_mem_mb"),
        runtime=resource("small_runtime_min"),
        cpus_per_task=1,
    log:
        R("{exp}/logs/prepare_data.log"),
    conda:
        "../../envs/diffmem.yaml"
    shell:
        "diffmem prepare-data --data {params.data} --out {output} > {log} 2>&1"


rule subsample:
    input:
        R("{exp}/data/dataset.npz"),
    output:
        RUN("train.npz"),
    resources:
        mem_mb=resource("small_mem_mb"),
        runtime=resource("small_runtime_min"),
        cpus_per_task=1,
    log:
        R("{exp}/logs/subsample/n{n}_seed{seed}.log"),
    conda:
        "../../envs/diffmem.yaml"
    shell:
        "diffmem subsample --dataset {input} --n {wildcards.n} --seed {wildcards.seed} --out {output} > {log} 2>&1"
