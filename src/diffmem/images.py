"""Image datasets read from local files: a folder of PNG / JPEG images, CIFAR-10's python batches, and
CelebA's aligned images with the preprocessing of arXiv 2505.17638.

Nothing is downloaded. Every reader returns pixels [N, C, H, W] as float32 in [-1, 1] (0 -> -1,
full scale -> +1) and, where the format has them, integer labels [N]. `data.prepare_dataset`
splits them into the pool and the held-out test set like every other dataset.

- `images`: every *.png / *.jpg / *.jpeg under `data.path` (recursive, sorted by relative path,
  hidden files skipped), read with Pillow. Without `data.image_size` all images must have one size;
  with it each is resized (shorter side to image_size, bilinear with antialiasing) and centre-cropped
  to image_size x image_size. `data.grayscale` converts colour to luma; otherwise grayscale and
  colour images must not be mixed.
- `cifar10`: the `cifar-10-batches-py` folder (data_batch_1..5, then test_batch): pickled dicts
  with b'data' uint8 [N, 3072] (R, G, B planes of 32x32) and b'labels'. Unpickled with an allow-list
  (numpy arrays and plain containers only), so a tampered file cannot run code.
- `celeba`: the `img_align_celeba` folder (202,599 JPEGs of 178x218). Preprocessing of arXiv
  2505.17638 (their loader: ToTensor, Resize(32), CenterCrop(32), Grayscale(1)): luma
  0.2989 R + 0.587 G + 0.114 B, the shorter side resized to 32 (178x218 -> 32x39), the centre 32x32
  kept (rows 4..35). Their code keeps ToTensor's [0, 1] (data.pixel_scale: unit) and
  subtracts the training set's mean per channel (train.center: channel).

`data.max_images` reads only the first images in that order (CelebA's files are numbered, so this is
the authors' order too).
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from pathlib import Path

import numpy as np

from diffmem.errors import ConfigError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CIFAR10_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")
CELEBA_SIZE = 32  # arXiv 2505.17638: grayscale, centre-cropped 32x32
# ITU-R 601-2 luma, the weights of torchvision's rgb_to_grayscale on float tensors
LUMA = np.array([0.2989, 0.587, 0.114], dtype=np.float64)
# Pillow modes read as one channel; everything else is read as RGB (palette, RGBA, CMYK, ...)
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_PROGRESS_EVERY_S = 10.0

log = logging.getLogger(__name__)


def _pil():
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - Pillow is a dependency
        raise ConfigError("data error: image datasets need Pillow (pip install Pillow)") from exc
    return Image


def list_image_files(folder: str | Path, *, max_images: int | None = None) -> list[Path]:
    """Image files under `folder` (recursive, sorted by relative path), at most `max_images`."""
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"data error: image folder {root} does not exist or is not a folder")
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        files.extend(Path(dirpath, f) for f in filenames
                     if not f.startswith(".") and f.lower().endswith(IMAGE_SUFFIXES))
    files.sort(key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise ConfigError(f"data error: no .png / .jpg / .jpeg images under {root}")
    return files[:max_images] if max_images else files


def to_unit_float(img) -> np.ndarray:
    """Pillow image -> float64 [H, W, C] in [0, 1] (C = 1 for grayscale modes, 3 otherwise)."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        return (np.asarray(img, dtype=np.float64) / 65535.0)[..., None]  # 16-bit PNG
    if img.mode == "F":
        return np.asarray(img, dtype=np.float64)[..., None]
    if img.mode in _GRAY_MODES:
        return (np.asarray(img.convert("L"), dtype=np.float64) / 255.0)[..., None]
    return np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0


def resize_center_crop(x: np.ndarray, size: int) -> np.ndarray:
    """[H, W, C] floats -> [size, size, C]: shorter side to `size` (bilinear, antialiased like
    torchvision's Resize(size)), then the centre size x size (torchvision's CenterCrop offsets)."""
    Image = _pil()
    h, w = x.shape[:2]
    if (h, w) == (size, size):
        return x
    # torchvision: the shorter side becomes `size`, the longer int(size * long / short)
    new_h, new_w = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    chans = [np.asarray(Image.fromarray(x[..., c].astype(np.float32), mode="F").resize((new_w, new_h),
                                                                                        Image.Resampling.BILINEAR))
             for c in range(x.shape[2])]
    y = np.stack(chans, axis=-1).astype(np.float64)  # [new_h, new_w, C]
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return y[top : top + size, left : left + size]


def preprocess(x: np.ndarray, *, grayscale: bool, image_size: int | None) -> np.ndarray:
    """[H, W, C] in [0, 1] -> [C', H', W'] float32 in [-1, 1]: luma (if grayscale and C = 3), then
    resize + centre crop (if image_size). Luma first: both are linear, so the order changes nothing
    but rounding, and one channel resizes three times faster."""
    if grayscale and x.shape[2] == 3:
        x = (x @ LUMA)[..., None]
    if image_size is not None:
        x = resize_center_crop(x, image_size)
    return (2.0 * np.transpose(x, (2, 0, 1)) - 1.0).astype(np.float32)


class _Progress:
    """One line every ~10 s on long reads (CelebA: 202,599 files)."""

    def __init__(self, what: str, total: int) -> None:
        self.what, self.total, self.t0, self.last = what, total, time.perf_counter(), time.perf_counter()

    def __call__(self, done: int) -> None:
        now = time.perf_counter()
        if now - self.last >= _PROGRESS_EVERY_S or done == self.total:
            self.last = now
            rate = done / max(now - self.t0, 1e-9)
            log.info(f"{self.what}: {done}/{self.total} images ({rate:.0f}/s, "
                     f"{(self.total - done) / max(rate, 1e-9):.0f} s left)")


def load_image_folder(folder: str | Path, *, grayscale: bool = False, image_size: int | None = None,
                      max_images: int | None = None, what: str = "images") -> np.ndarray:
    """Every image under `folder` (see module docstring) as [N, C, H, W] float32 in [-1, 1]."""
    Image = _pil()
    files = list_image_files(folder, max_images=max_images)
    root = Path(folder)
    out, first, progress = [], None, _Progress(what, len(files))
    for i, path in enumerate(files):
        try:
            with Image.open(path) as img:
                img.load()
                x = to_unit_float(img)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise ConfigError(f"data error: cannot read image {path} ({exc})") from exc
        y = preprocess(x, grayscale=grayscale, image_size=image_size)
        if first is None:
            first = (path, y.shape)
        elif y.shape != first[1]:
            name, other = path.relative_to(root), first[0].relative_to(root)
            if y.shape[1:] != first[1][1:]:
                raise ConfigError(
                    f"data error: images under {root} have mixed sizes ({other} is {first[1][2]}x{first[1][1]}, "
                    f"{name} is {y.shape[2]}x{y.shape[1]}); set data.image_size to resize and centre-crop them")
            raise ConfigError(
                f"data error: images under {root} mix grayscale and colour ({other} has {first[1][0]} channel(s), "
                f"{name} has {y.shape[0]}); set data.grayscale: true or convert them")
        out.append(y)
        progress(i + 1)
    return np.stack(out)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and builtin containers only (CIFAR-10's batches need nothing else)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        return super().find_class(module, name)


def read_cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: images uint8 [N, 3, 32, 32] and labels int64 [N]."""
    try:
        with open(path, "rb") as fh:
            blob = _NumpyOnlyUnpickler(fh, encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError) as exc:
        raise ConfigError(f"data error: cannot read CIFAR-10 batch {path} ({exc})") from exc
    if not isinstance(blob, dict):
        raise ConfigError(f"data error: CIFAR-10 batch {path} is not a pickled dict")
    blob = {k.decode() if isinstance(k, bytes) else k: v for k, v in blob.items()}
    if "data" not in blob or "labels" not in blob:
        raise ConfigError(f"data error: CIFAR-10 batch {path} lacks 'data' or 'labels' (keys {sorted(blob)})")
    data, labels = np.asarray(blob["data"]), np.asarray(blob["labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (data.shape[0],):
        raise ConfigError(f"data error: CIFAR-10 batch {path} holds data {data.dtype} {data.shape} and "
                          f"{labels.shape[0]} labels; expected uint8 [N, 3072] and N labels")
    return data.reshape(-1, 3, 32, 32), labels


def cifar10_files(folder: str | Path) -> list[Path]:
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"data error: CIFAR-10 folder {root} does not exist (the extracted cifar-10-batches-py)")
    missing = [b for b in CIFAR10_BATCHES if not (root / b).is_file()]
    if missing:
        raise ConfigError(f"data error: CIFAR-10 folder {root} lacks {', '.join(missing)} "
                          "(expected the python version's data_batch_1..5 and test_batch)")
    return [root / b for b in CIFAR10_BATCHES]


def load_cifar10(folder: str | Path, *, grayscale: bool = False, image_size: int | None = None,
                 max_images: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10's 60,000 images (training batches, then the test batch) as [N, C, H, W] float32 in
    [-1, 1], and their labels [N]."""
    parts = [read_cifar10_batch(p) for p in cifar10_files(folder)]
    images = np.concatenate([p[0] for p in parts])[:max_images]  # [N, 3, 32, 32] uint8
    labels = np.concatenate([p[1] for p in parts])[:max_images]
    if not grayscale and image_size in (None, 32):
        x = images.astype(np.float32)
        x /= 127.5
        x -= 1.0
        return x, labels
    progress = _Progress("cifar10", images.shape[0])
    out = []
    for i, img in enumerate(images):
        out.append(preprocess(np.transpose(img, (1, 2, 0)) / 255.0, grayscale=grayscale, image_size=image_size))
        progress(i + 1)
    return np.stack(out), labels


def load_celeba(folder: str | Path, *, image_size: int | None = None, max_images: int | None = None) -> np.ndarray:
    """CelebA aligned images with the preprocessing of arXiv 2505.17638 (grayscale, shorter side to
    32, centre 32x32), [N, 1, 32, 32] float32 in [-1, 1]."""
    return load_image_folder(folder, grayscale=True, image_size=image_size or CELEBA_SIZE,
                             max_images=max_images, what="celeba")


def load_image_dataset(data) -> tuple[np.ndarray, np.ndarray | None]:
    """Images [N, C, H, W] and labels (or None) of an image dataset config (`DataConfig` or dict)."""
    get = data.get if isinstance(data, dict) else lambda k, d=None: getattr(data, k, d)
    kind, path = get("dataset"), get("path")
    if not path:
        raise ConfigError(f"config error at 'data.path': dataset '{kind}' needs a path to its folder")
    size, limit = get("image_size"), get("max_images")
    if kind == "images":
        return load_image_folder(path, grayscale=bool(get("grayscale")), image_size=size, max_images=limit), None
    if kind == "cifar10":
        return load_cifar10(path, grayscale=bool(get("grayscale")), image_size=size, max_images=limit)
    if kind == "celeba":
        return load_celeba(path, image_size=size, max_images=limit), None
    raise ConfigError(f"config error at 'data.dataset': {kind!r} is not an image dataset")


def count_images(data: dict) -> int:
    """Number of images an image dataset config yields, without decoding them (config checks)."""
    kind, path, limit = data["dataset"], data.get("path"), data.get("max_images")
    if not path:
        raise ConfigError(f"config error at 'data.path': dataset '{kind}' needs a path to its folder")
    if kind == "cifar10":
        total = sum(read_cifar10_batch(p)[1].shape[0] for p in cifar10_files(path))
    else:
        total = len(list_image_files(path))
    return min(total, limit) if limit else total


def image_shape_of(data: dict) -> tuple[int, int, int]:
    """(C, H, W) an image dataset config yields (reads one image header for a folder)."""
    kind, size = data["dataset"], data.get("image_size")
    if kind == "celeba":
        return (1, size or CELEBA_SIZE, size or CELEBA_SIZE)
    if kind == "cifar10":
        return (1 if data.get("grayscale") else 3, size or 32, size or 32)
    Image = _pil()
    first = list_image_files(data["path"], max_images=1)[0]
    with Image.open(first) as img:
        channels = 1 if (data.get("grayscale") or img.mode in _GRAY_MODES) else 3
        w, h = img.size
    return (channels, size or h, size or w)
