rule prepare_data:
    output:
        R("{exp}/data/dataset.npz"),
    params:
        content=data_content,  # tracked: the data slice with the sha256 of the files data.path names
        data=untracked(data_slice),
    resources:
        **SMALL_JOB,
    log:
        R("{exp}/logs/prepare_data.log"),
    benchmark:
        R("{exp}/benchmarks/prepare_data.tsv"),
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
        **SMALL_JOB,
    log:
        R("{exp}/logs/subsample/n{n}_seed{seed}.log"),
    benchmark:
        R("{exp}/benchmarks/subsample/n{n}_seed{seed}.tsv"),
    conda:
        "../../envs/diffmem.yaml"
    shell:
        "diffmem subsample --dataset {input} --n {wildcards.n} --seed {wildcards.seed} --out {output} > {log} 2>&1"
