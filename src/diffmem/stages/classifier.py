"""Classifier stage: train the small CNN whose penultimate layer is the `classifier` feature space.

Trained once per experiment on the full labelled pool (no n or seed invalidates it), checked on the
held-out split, and saved with its architecture arguments (loadable with weights_only=True).

Run: `diffmem classifier --dataset dataset.npz --quality-cfg '<json>' --out classifier.pt`
"""

from __future__ import annotations

import logging
import sys

import torch

from diffmem.config import ConfigError, QualityConfig, read_json_arg
from diffmem.data import load_dataset
from diffmem.heap import keep_freed_memory
from diffmem.io import fail
from diffmem.log import configure
from diffmem.metrics import features
from diffmem.stages import stage_parser

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("diffmem classifier", __doc__, "diffmem.stages.classifier")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--quality-cfg", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        cfg = QualityConfig.from_dict(read_json_arg(args.quality_cfg))
    except ConfigError as exc:
        fail(str(exc))
    keep_freed_memory()  # the network's activations reuse the heap instead of faulting pages in anew
    torch.set_num_threads(args.threads)
    ds = load_dataset(args.dataset)
    if ds.pool_labels is None or ds.image_shape is None:
        fail("the classifier feature space needs labelled, image-shaped data (dataset digits)")
    shape = (-1, *ds.image_shape)
    model = features.train_classifier(
        ds.pool.reshape(shape), ds.pool_labels, epochs=cfg.classifier_epochs, lr=cfg.classifier_lr,
        batch_size=128, generator=torch.Generator().manual_seed(cfg.seed), device=torch.device("cpu"))
    accuracy = features.classifier_accuracy(model, ds.test.reshape(shape), ds.test_labels)
    log.info(f"held-out accuracy {accuracy:.3f} on {ds.test.shape[0]} images")
    if accuracy < 0.8:
        fail(f"classifier reached only {accuracy:.3f} held-out accuracy; raise quality.classifier_epochs")
    features.save_classifier(model, args.out)
    log.info(f"wrote {args.out}")


if __name__ == "__main__":
    configure()
    main(sys.argv[1:])
