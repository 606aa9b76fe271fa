# Sample quality per checkpoint (FD/KID in feature spaces, exact metrics on synthetic data,
# E_TG/E_OG). Only experiments with quality.enabled request these files.
rule classifier:
    input:
        R("{exp}/data/dataset.npz"),
    output:
        R("{exp}/classifier/classifier.pt"),
    params:
        quality=classifier_slice,
    threads: job_cpus
    resources:
        mem_mb=resource("quality_mem_mb"),
        runtime=resource("quality_runtime_min"),
        cpus_per_task=job_cpus,
    log:
        R("{exp}/logs/classifier.log"),
    benchmark:
        R("{exp}/benchmarks/classifier.tsv"),
    conda:
        "../../envs/diffmem.yaml"
    shell:
        "diffmem classifier --dataset {input} --quality-cfg {params.quality} --out {output} > {log} 2>&1"


rule quality:
    input:
        unpack(quality_inputs),
    output:
        RUN("quality.nc"),
    params:
        data=data_slice,
        content=quality_content,  # tracked: the quality slice with the sha256 of quality.inception_weights
        quality=untracked(section("quality")),
        metrics=lambda wildcards, input: f"--train-metrics {input.metrics}" if "metrics" in input.keys() else "",
        checkpoints=lambda wildcards, input: f"--checkpoints {input.checkpoints}" if "checkpoints" in input.keys() else "",
        classifier=lambda wildcards, input: (
            f"--classifier {input.classifier}" if "classifier" in input.keys() else ""
        ),
    threads: job_cpus
    resources:
        mem_mb=resource("quality_mem_mb"),
        runtime=resource("quality_runtime_min"),
        cpus_per_task=job_cpus,
    log:
        R("{exp}/logs/quality/n{n}_seed{seed}.log"),
    benchmark:
        R("{exp}/benchmarks/quality/n{n}_seed{seed}.tsv"),
    conda:
        "../../envs/diffmem.yaml"
    shell:
        "diffmem quality --samples {input.samples} {params.metrics} {params.checkpoints} --train {input.train}"
        " --dataset {input.dataset} --data-cfg {params.data} --quality-cfg {params.quality}"
        " {params.classifier} --threads {threads} --out {output} > {log} 2>&1"
