"""Feature spaces for FD and KID: raw data, a small trained classifier, and Inception-v3.

- `data`: the flattened data vectors.
- `classifier`: the penultimate (128-d) layer of `DigitClassifier`, a small CNN trained once per
  experiment on the labelled pool (`train_classifier`); works on single-channel 8x8 digits and
  32x32 images alike.
- `inception`: the 2048-d pool3 features of the Inception-v3 network behind FID (Heusel et al.
  2017): the TF graph inception-2015-12-05 as ported to PyTorch by pytorch-fid, whose weights file
  pt_inception-2015-12-05-6726825d.pth the common FID packages load. Written here in plain torch
  (torchvision is not needed). It differs from torchvision's ImageNet Inception-v3: the average
  pools of Mixed_5b-d, 6b-e and 7b leave padding out of the mean (count_include_pad=False, as TF
  does), Mixed_7c max-pools its pool branch, the classifier has 1008 classes and there is no
  auxiliary head; inputs are resized to 299x299 bilinearly (align_corners=False) and taken in
  [-1, 1] (no ImageNet mean/std transform). `load_inception(path)` loads the local weights file
  strictly (every tensor, right shapes) and checks its SHA-256 against the 8 hex digits in its
  name or a configured digest. Not reproduced: TF's own bilinear resize (pytorch-fid uses torch's,
  so FIDs match pytorch-fid's, which differ from TF-FID by a fraction of a point).

Images are [N, C, H, W] float arrays in [-1, 1]; features come back as float64 numpy [N, F].
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from diffmem.io import atomic_torch_save, sha256_of

__all__ = ["DigitClassifier", "train_classifier", "classifier_accuracy", "classifier_features", "save_classifier",
           "load_classifier", "InceptionV3Features", "load_inception", "check_digest", "extract_features",
           "FEATURE_SPACES", "FID_WEIGHTS_NAME", "FID_WEIGHTS_URL"]

FEATURE_SPACES = ("data", "classifier", "inception")


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class MaxPool2x2(nn.Module):
    """nn.MaxPool2d(2): the maximum of each 2x2 block (stride 2; an odd last row or column is dropped).

    With autograd recording it is F.max_pool2d, whose backward routes each gradient to the first
    maximum of its block. Without (features, accuracy), the maximum of the four strided quarter grids:
    the same numbers bit for bit (a maximum rounds nothing, and both keep a NaN), ~5x less time on CPU
    than max_pool2d, which also records the arg-max indices that only its backward uses (~20 % of the
    quality stage's classifier features)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, C, H // 2, W // 2]
        if torch.is_grad_enabled() and x.requires_grad:
            return F.max_pool2d(x, 2)
        height, width = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
        rows = torch.maximum(x[..., 0:height:2, :width], x[..., 1:height:2, :width])  # [B, C, H // 2, W]
        return torch.maximum(rows[..., 0::2], rows[..., 1::2])


class DigitClassifier(nn.Module):
    """conv-conv-pool-conv-pool to 2x2, a ReLU feature layer and a linear read-out; any H, W >= 2.

    The adaptive pool makes the feature layer's input 64*2*2 whatever the image size, so one
    architecture serves 8x8 digits and 32x32 images."""

    def __init__(self, *, in_channels: int = 1, num_classes: int = 10, feature_dim: int = 128) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), MaxPool2x2(),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
            nn.Flatten(), nn.Linear(64 * 2 * 2, feature_dim), nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)
        # kept beside the weights so a saved file rebuilds the same architecture
        self.args = {"in_channels": in_channels, "num_classes": num_classes, "feature_dim": feature_dim}

    def features(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, F]
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, classes] logits
        return self.head(self.body(x))


@torch.no_grad()
def _init_(model: nn.Module, generator: torch.Generator) -> None:
    """PyTorch's default Conv/Linear initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights
    and biases, drawn from `generator` so that the global RNG is never touched."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            bound = 1.0 / math.sqrt(module.weight[0].numel())
            module.weight.uniform_(-bound, bound, generator=generator)
            if module.bias is not None:
                module.bias.uniform_(-bound, bound, generator=generator)


def train_classifier(images: np.ndarray, labels: np.ndarray, *, epochs: int = 30, lr: float = 2e-3,
                     batch_size: int = 128, generator: torch.Generator,
                     device: torch.device | str = "cpu") -> DigitClassifier:
    """Train a `DigitClassifier` on images [N, C, H, W] and integer labels [N]; returns it in eval
    mode on `device`.

    Adam on cross-entropy with a cosine learning-rate decay from `lr` to 0; each batch is shifted by
    up to one pixel in each direction (a random torch.roll) so features do not hinge on exact pixel
    positions. Initialisation, shuffling and
    shifts all draw from `generator` (a CPU generator), so a seed fixes the result on CPU."""
    device = torch.device(device)
    x = torch.as_tensor(np.asarray(images), dtype=torch.float32).to(device)  # [N, C, H, W]
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long).to(device)  # [N]
    if x.ndim != 4 or x.shape[0] != y.shape[0]:
        raise ValueError(f"images must be [N, C, H, W] with one label each; got {tuple(x.shape)}, {tuple(y.shape)}")
    # built on the meta device so that the layers' default initialisation (which draws from the
    # global RNG) never runs; the real weights come from `generator`
    with torch.device("meta"):
        model = DigitClassifier(in_channels=x.shape[1], num_classes=int(y.max()) + 1)
    model = model.to_empty(device="cpu")
    _init_(model, generator)
    model = model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    total, step = epochs * math.ceil(x.shape[0] / batch_size), 0
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=generator).to(device)
        for i in range(0, x.shape[0], batch_size):
            # cosine decay to zero: the last epochs average out minibatch noise, so the final
            # accuracy depends little on the seed
            opt.param_groups[0]["lr"] = 0.5 * lr * (1 + math.cos(math.pi * step / total))
            step += 1
            idx = perm[i : i + batch_size]
            shift = torch.randint(-1, 2, (2,), generator=generator).tolist()
            xb = torch.roll(x[idx], shifts=shift, dims=(2, 3))
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def _batched(fn, images: np.ndarray, *, device: torch.device, batch_size: int) -> torch.Tensor:
    """fn over batches of at most batch_size images, of sizes as equal as can be: no batch of 1-3 rows at the
    end (oneDNN's convolutions take another kernel for those, with other roundings)."""
    x = torch.as_tensor(np.asarray(images), dtype=torch.float32)  # stays on CPU; batches move
    count = max(1, -(-x.shape[0] // batch_size))
    size, extra = divmod(x.shape[0], count)
    bounds = np.cumsum([0] + [size + (i < extra) for i in range(count)])
    out = [fn(x[lo:hi].to(device)).cpu() for lo, hi in zip(bounds[:-1], bounds[1:])]
    return torch.cat(out)


# Batches of at most 128 keep a batch's activations (2 MiB at the widest layer for 8x8 digits) in a core's
# cache: ~1.2x less time than 1024 on CPU, where the size of a batch does not change an image's features (bit
# for bit, checked from 4 to 1024 rows; batches of 1-3 rows differ in rounding, and `_batched` makes none).
CLASSIFIER_BATCH = 128


def classifier_accuracy(model: DigitClassifier, images: np.ndarray, labels: np.ndarray, *,
                        batch_size: int = CLASSIFIER_BATCH) -> float:
    """Fraction of images [N, C, H, W] whose arg-max logit equals the label."""
    logits = _batched(model, images, device=_device_of(model), batch_size=batch_size)  # [N, classes]
    return float((logits.argmax(1).numpy() == np.asarray(labels)).mean())


def _features_in_place(model: DigitClassifier):
    """`model.features` for inference: the same layers in the same order, each ReLU applied in place on the output
    of the layer before it, which nothing else holds: the same numbers bit for bit, without allocating and
    filling a new activation tensor per ReLU (~10 % of the quality stage's feature time on CPU). For `_batched`
    only, which runs without autograd."""
    def features(x: torch.Tensor) -> torch.Tensor:
        for layer in model.body:
            x = torch.relu_(x) if isinstance(layer, nn.ReLU) else layer(x)
        return x

    return features


def classifier_features(model: DigitClassifier, images: np.ndarray, *,
                        batch_size: int = CLASSIFIER_BATCH) -> np.ndarray:
    """Penultimate-layer features [N, feature_dim] (float64) of images [N, C, H, W]."""
    feats = _batched(_features_in_place(model), images, device=_device_of(model), batch_size=batch_size)
    return feats.double().numpy()


def save_classifier(model: DigitClassifier, path: str | Path) -> None:
    """Write {'args': architecture arguments, 'state': state_dict (on CPU)}, atomically."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_torch_save(path, {"args": dict(model.args), "state": state})


def load_classifier(path: str | Path | None, *, device: torch.device | str = "cpu") -> DigitClassifier:
    """The classifier `save_classifier` wrote, in eval mode (loaded with weights_only=True)."""
    if path is None or not Path(path).exists():
        raise FileNotFoundError(f"classifier weights {path} not found (train_classifier + save_classifier "
                                "write them; the pipeline's classifier rule does this)")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model = DigitClassifier(**blob["args"])
    model.load_state_dict(blob["state"])
    return model.to(device).eval()


# ---- Inception-v3 (FID feature extractor) -------------------------------------------------------

class BasicConv2d(nn.Module):
    """conv (no bias) -> BatchNorm (eps 1e-3, as in the TF original) -> ReLU."""

    def __init__(self, cin: int, cout: int, **conv) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **conv)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class InceptionA(nn.Module):
    """Mixed_5b-d (35x35 grid): 1x1, 5x5 and double-3x3 branches plus a pooled 1x1; 224 + pool_features out."""

    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))), pool], 1)


class InceptionB(nn.Module):
    """Mixed_6a: grid 35 -> 17 by strided 3x3 convs and a max pool; 384 + 96 + cin channels out."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    """Mixed_6b-e (17x17 grid): factorised 7x7 branches with c7 inner channels; 768 out."""

    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            d = layer(d)
        pool = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
        return torch.cat([self.branch1x1(x), b7, d, pool], 1)


class InceptionD(nn.Module):
    """Mixed_7a: grid 17 -> 8; 320 + 192 + cin channels out."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    """Mixed_7b/7c (8x8 grid), 2048 out. The FID variant pools by average (count_include_pad=False)
    in Mixed_7b and by max in Mixed_7c, as the TF graph behind the FID weights does."""

    def __init__(self, cin: int, *, pool: str) -> None:
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = (F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False) if self.pool == "avg"
                  else F.max_pool2d(x, 3, stride=1, padding=1))
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(b3), self.branch3x3_2b(b3),
                          self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d), self.branch_pool(pooled)], 1)


FID_NUM_CLASSES = 1008  # the TF graph's classifier: 1000 ImageNet classes + 8 unused


class InceptionV3Features(nn.Module):
    """FID Inception-v3; `forward` gives the 2048-d pool3 features of input [B, C, H, W] in [-1, 1].

    Module names and shapes are those of the FID weights file (torchvision's Inception3 layout with
    num_classes=1008 and no AuxLogits), so its state_dict loads strictly; `fc` (the 1008-class
    read-out) is loaded with the rest but FID does not use it (`logits` does)."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = InceptionA(192, 32), InceptionA(256, 64), InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b, self.Mixed_6c = InceptionC(768, 128), InceptionC(768, 160)
        self.Mixed_6d, self.Mixed_6e = InceptionC(768, 160), InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b, self.Mixed_7c = InceptionE(1280, pool="avg"), InceptionE(2048, pool="max")
        self.fc = nn.Linear(2048, FID_NUM_CLASSES)

    def logits(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] in [-1, 1] -> [B, 1008]
        return self.fc(self.forward(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 1 or 3, H, W] in [-1, 1] -> [B, 2048]
        if x.shape[1] == 1:  # grayscale: the same image in each of the three colour channels
            x = x.repeat(1, 3, 1, 1)
        if x.shape[1] != 3:
            raise ValueError(f"Inception-v3 takes 1 or 3 channels; got {x.shape[1]}")
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)  # [B, 3, 299, 299]
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # [B, 64, 147, 147]
        x = F.max_pool2d(x, 3, stride=2)  # [B, 64, 73, 73]
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)  # [B, 192, 35, 35]
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)  # ends at [B, 2048, 8, 8]
        return F.adaptive_avg_pool2d(x, 1).flatten(1)  # [B, 2048]


FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + FID_WEIGHTS_NAME
_DIGEST_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z]+$")


def check_digest(path: str | Path, expected: str | None = None) -> str | None:
    """Verify a file's SHA-256 against `expected` (a hex prefix of 8-64 digits) or, without it,
    against the hex digits at the end of its name (torch hub's convention, e.g. ...-6726825d.pth).
    Returns the prefix checked (None when there is nothing to check); raises ValueError on mismatch."""
    if expected is None:
        match = _DIGEST_IN_NAME.search(Path(path).name)
        expected = match.group(1) if match else None
    if expected is None:
        return None
    expected = expected.lower()
    actual = sha256_of(path)
    if not actual.startswith(expected):
        raise ValueError(f"Inception-v3 weights {path}: SHA-256 {actual[:16]}... does not start with {expected} "
                         "(a corrupt or different file)")
    return expected


def load_inception(weights_path: str | Path | None, *, sha256: str | None = None,
                   device: torch.device | str = "cpu") -> InceptionV3Features:
    """The FID Inception-v3 with weights from a local file (loaded with weights_only=True).

    The file is pytorch-fid's pt_inception-2015-12-05-6726825d.pth or any state_dict with the same
    names and shapes (optionally nested under 'state_dict', or prefixed by 'module.'); BatchNorm's
    num_batches_tracked may be present or absent. Its SHA-256 is checked (`check_digest`). Raises
    FileNotFoundError naming the path when it is missing and ValueError, one line, when the digest or
    the tensors do not match (missing, unexpected or wrongly shaped, e.g. torchvision's ImageNet
    weights with their 1000-class fc and AuxLogits)."""
    if weights_path is None or not Path(weights_path).exists():
        raise FileNotFoundError(
            f"Inception-v3 weights {weights_path} not found: FID features need the local file {FID_WEIGHTS_NAME} "
            f"(quality.inception_weights; get it from {FID_WEIGHTS_URL}); it cannot be downloaded at run time")
    check_digest(weights_path, sha256)
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise ValueError(f"Inception-v3 weights {weights_path} cannot be read as a state_dict ({exc})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"Inception-v3 weights {weights_path} hold a {type(state).__name__}, not a state_dict")
    # checkpoints saved from a DataParallel or compiled wrapper prefix every name
    state = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}
    model = InceptionV3Features()
    expected = {k: v.shape for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    given = {k: v.shape for k, v in state.items() if not k.endswith("num_batches_tracked")}
    missing, unexpected = sorted(set(expected) - set(given)), sorted(set(given) - set(expected))
    shapes = sorted(k for k in set(expected) & set(given) if tuple(expected[k]) != tuple(given[k]))
    if missing or unexpected or shapes:
        hint = (" (these look like torchvision's ImageNet Inception-v3, not the FID weights)"
                if any(k.startswith("AuxLogits.") for k in unexpected) or "fc.weight" in shapes else "")
        parts = [f"{len(missing)} missing (e.g. {missing[:2]})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})" if unexpected else "",
                 f"{len(shapes)} of the wrong shape (e.g. {shapes[0]}: {tuple(given[shapes[0]])} instead of "
                 f"{tuple(expected[shapes[0]])})" if shapes else ""]
        raise ValueError(f"Inception-v3 weights {weights_path} do not match the FID network: "
                         + ", ".join(p for p in parts if p) + hint)
    model.load_state_dict(state, strict=False)  # only num_batches_tracked may be absent
    return model.to(device).eval()


_DEFAULT_BATCH = {"classifier": CLASSIFIER_BATCH, "inception": 32}  # Inception at 299x299: ~40 MiB of activations per image


def extract_features(name: str, x: np.ndarray, *, model: nn.Module | None = None, batch_size: int | None = None,
                     image_shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """Features [N, F] (float64 numpy) of data x in feature space `name`.

    - 'data': x flattened to [N, D];
    - 'classifier': `classifier_features(model, x)` (model from `train_classifier`/`load_classifier`);
    - 'inception': `model(x)` (model from `load_inception`), 2048-d.
    The networks take x as [N, C, H, W]; flat x [N, D] is reshaped with `image_shape` (C, H, W).
    Batches run on the model's device; batch_size defaults to 128 (classifier) or 32 (inception)."""
    if name not in FEATURE_SPACES:
        raise ValueError(f"unknown feature space {name!r}; use one of {FEATURE_SPACES}")
    arr = np.asarray(x)
    if name == "data":
        return arr.astype(np.float64).reshape(arr.shape[0], -1)
    if model is None:
        raise ValueError(f"feature space {name!r} needs its network (model=...)")
    if image_shape is not None:
        arr = arr.reshape(arr.shape[0], *image_shape)
    if arr.ndim != 4:
        raise ValueError(f"feature space {name!r} needs images [N, C, H, W] (or image_shape); got {arr.shape}")
    size = batch_size or _DEFAULT_BATCH[name]
    if name == "classifier":
        return classifier_features(model, arr, batch_size=size)
    return _batched(model, arr, device=_device_of(model), batch_size=size).double().numpy()
