"""Image datasets: folders of PNG / JPEG, CIFAR-10 python batches, CelebA's preprocessing.

Every test writes its own small images; nothing is downloaded."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from PIL import Image

from diffmem.config import ConfigError, DataConfig, validate_config
from diffmem.data import prepare_dataset
from diffmem.images import (
    CIFAR10_BATCHES,
    count_images,
    image_shape_of,
    load_celeba,
    load_cifar10,
    load_image_folder,
    read_cifar10_batch,
)
from diffmem.resources import data_shape


def write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


@pytest.fixture
def gray_folder(tmp_path, rng):
    """12 grayscale 8x6 (W x H) PNGs in two subfolders, and the uint8 pixels in file order."""
    pixels = rng.integers(0, 256, size=(12, 6, 8), dtype=np.uint8)
    for i, p in enumerate(pixels):
        write_png(tmp_path / "imgs" / ("a" if i < 6 else "b") / f"{i:02d}.png", p)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    write_png(tmp_path / "imgs" / ".hidden" / "x.png", pixels[0])  # hidden folders are skipped
    return tmp_path / "imgs", pixels


def test_png_folder_is_read_recursively_in_order_and_scaled(gray_folder):
    folder, pixels = gray_folder
    x = load_image_folder(folder)
    assert x.shape == (12, 1, 6, 8) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0], pixels / 127.5 - 1, atol=1e-6)  # 0 -> -1, 255 -> +1
    assert count_images({"dataset": "images", "path": str(folder)}) == 12
    assert count_images({"dataset": "images", "path": str(folder), "max_images": 5}) == 5


def test_rgb_png_jpeg_and_grayscale_luma(tmp_path):
    colour = np.zeros((4, 4, 3), dtype=np.uint8)
    colour[..., 0] = 255  # pure red
    write_png(tmp_path / "c" / "red.png", colour)
    Image.fromarray(np.full((4, 4, 3), 128, dtype=np.uint8)).save(tmp_path / "c" / "grey.jpg", quality=100)
    x = load_image_folder(tmp_path / "c")
    assert x.shape == (2, 3, 4, 4)
    # files sort as grey.jpg, red.png; JPEG of a flat grey is flat (up to 1 level)
    assert np.abs(x[0] - (128 / 127.5 - 1)).max() < 2 / 127.5
    np.testing.assert_allclose(x[1, 0], 1.0)
    np.testing.assert_allclose(x[1, 1:], -1.0)
    g = load_image_folder(tmp_path / "c", grayscale=True)
    assert g.shape == (2, 1, 4, 4)
    np.testing.assert_allclose(g[1], 2 * 0.2989 - 1, atol=1e-6)  # luma of pure red


def test_folder_errors_are_one_clear_line(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_image_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("x")
    with pytest.raises(ConfigError, match="no .png / .jpg / .jpeg images"):
        load_image_folder(tmp_path / "empty")
    write_png(tmp_path / "mixed" / "a.png", np.zeros((8, 8)))
    write_png(tmp_path / "mixed" / "b.png", np.zeros((10, 8)))
    with pytest.raises(ConfigError, match=r"mixed sizes .*a.png is 8x8.*b.png is 8x10.*data.image_size"):
        load_image_folder(tmp_path / "mixed")
    assert load_image_folder(tmp_path / "mixed", image_size=4).shape == (2, 1, 4, 4)
    write_png(tmp_path / "modes" / "a.png", np.zeros((8, 8)))
    write_png(tmp_path / "modes" / "b.png", np.zeros((8, 8, 3)))
    with pytest.raises(ConfigError, match="mix grayscale and colour.*data.grayscale"):
        load_image_folder(tmp_path / "modes")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ConfigError, match="cannot read image .*broken.png"):
        load_image_folder(tmp_path / "bad")


def test_resize_keeps_the_centre_square(tmp_path):
    # a 40 (W) x 80 (H) image: left half 0, right half 255, top 16 rows 255. Resizing the shorter
    # side to 10 gives 10 x 20 (the band becomes rows 0..3); the centre crop keeps rows 5..14
    img = np.zeros((80, 40), dtype=np.uint8)
    img[:, 20:] = 255
    img[:16] = 255
    write_png(tmp_path / "r" / "a.png", img)
    x = load_image_folder(tmp_path / "r", image_size=10)[0, 0]  # [10, 10]
    assert x.shape == (10, 10)
    assert x[:, :4].max() < -0.9 and x[:, 6:].min() > 0.9  # left dark, right bright, no top rows kept


def write_cifar(folder, rng, *, per_batch=4):
    folder.mkdir(parents=True, exist_ok=True)
    all_data, all_labels = [], []
    for name in CIFAR10_BATCHES:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        with open(folder / name, "wb") as fh:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data,
                         b"filenames": [f"{i}.png".encode() for i in range(per_batch)]}, fh, protocol=2)
        all_data.append(data)
        all_labels += labels
    return np.concatenate(all_data), np.array(all_labels)


def test_cifar10_batches_layout_labels_and_grayscale(tmp_path, rng):
    data, labels = write_cifar(tmp_path / "cifar-10-batches-py", rng)
    x, y = load_cifar10(tmp_path / "cifar-10-batches-py")
    assert x.shape == (24, 3, 32, 32) and np.array_equal(y, labels)
    # b'data' rows are the R, G, B planes of 32x32, row-major
    i, c, h, w = 13, 2, 5, 30
    assert x[i, c, h, w] == pytest.approx(data[i, c * 1024 + h * 32 + w] / 127.5 - 1)
    g, _ = load_cifar10(tmp_path / "cifar-10-batches-py", grayscale=True, max_images=10)
    rgb = data[:10].reshape(10, 3, 32, 32) / 255.0
    expected = 2 * (0.2989 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]) - 1
    assert g.shape == (10, 1, 32, 32)
    np.testing.assert_allclose(g[:, 0], expected, atol=1e-5)
    assert count_images({"dataset": "cifar10", "path": str(tmp_path / "cifar-10-batches-py")}) == 24
    assert image_shape_of({"dataset": "cifar10", "path": "x", "grayscale": True}) == (1, 32, 32)


def test_cifar10_errors_and_no_code_execution(tmp_path, rng):
    with pytest.raises(ConfigError, match="does not exist"):
        load_cifar10(tmp_path / "nope")
    folder = tmp_path / "c"
    write_cifar(folder, rng)
    os.remove(folder / "data_batch_3")
    with pytest.raises(ConfigError, match="lacks data_batch_3"):
        load_cifar10(folder)

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    with open(folder / "data_batch_3", "wb") as fh:
        pickle.dump({b"data": Evil(), b"labels": []}, fh)
    with pytest.raises(ConfigError, match="refusing to unpickle"):
        read_cifar10_batch(folder / "data_batch_3")
    assert not (tmp_path / "pwned").exists()
    with open(folder / "data_batch_3", "wb") as fh:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, fh)
    with pytest.raises(ConfigError, match=r"expected uint8 \[N, 3072\]"):
        load_cifar10(folder)


def test_celeba_preprocessing_grayscale_crop_32(tmp_path):
    # CelebA aligned images are 178 x 218 (W x H): resized to 32 x 39, rows 4..35 kept. A white band
    # on the top 20 source rows (3.6 resized rows) is cropped away; a band of 40 rows (7.2) is not
    folder = tmp_path / "img_align_celeba"
    for i, band in enumerate((20, 40)):
        img = np.zeros((218, 178, 3), dtype=np.uint8)
        img[:band] = (255, 255, 255)
        img[:, :10] = (255, 0, 0)  # a red left edge, grayscale keeps only its luma
        write_png(folder / f"{i + 1:06d}.png", img)
    x = load_celeba(folder)
    assert x.shape == (2, 1, 32, 32)
    assert x[0, 0, 0, 5:].max() < -0.9  # white band cropped away
    assert x[1, 0, 0, 5:].min() > 0.5  # white band still there
    assert -0.5 < x[0, 0, 16, 0] < 2 * 0.2989 - 1 + 0.05  # red edge as luma, blended by the resize
    assert image_shape_of({"dataset": "celeba", "path": str(folder)}) == (1, 32, 32)


def test_image_datasets_go_through_prepare_and_config(gray_folder, tmp_path):
    folder, pixels = gray_folder
    ds = prepare_dataset(DataConfig(dataset="images", path=str(folder), n_test=3))
    assert ds.pool.shape == (9, 48) and ds.test.shape == (3, 48) and ds.image_shape == (1, 6, 8)
    rows = {r.tobytes() for r in (pixels / 127.5 - 1).astype(np.float32).reshape(12, -1)}
    assert all(r.tobytes() in rows for r in np.concatenate([ds.pool, ds.test]))
    data = {"dataset": "images", "path": str(folder), "n_train": [4, 8], "seeds": [0], "n_test": 3}
    cfg = validate_config({"experiments": {"imgs": {"data": data, "model": {"arch": "unet", "width": 8}}}})
    assert cfg["experiments"]["imgs"]["data"]["image_size"] is None
    assert data_shape(cfg["experiments"]["imgs"]["data"]) == (1, 6, 8)
    with pytest.raises(ConfigError, match="larger than the pool of 9"):
        validate_config({"experiments": {"imgs": {"data": {**data, "n_train": [10]}}}})
    with pytest.raises(ConfigError, match="image folder .* does not exist"):
        validate_config({"experiments": {"imgs": {"data": {**data, "path": str(tmp_path / "gone")}}}})
    with pytest.raises(ConfigError, match="does not match the images"):
        prepare_dataset(DataConfig(dataset="images", path=str(folder), n_test=3, image_shape=(1, 8, 6)))
