"""User files are tracked by content, not by timestamps (diffmem.fingerprint, docs/reruns.md).

Library: a fingerprint depends on the bytes the loader reads and nothing else; a change that keeps the
old mtime (restored with os.utime, as `cp -p` or an archive does) still changes it; unchanged files are
not read again; a corrupt cache is recomputed. Workflow: after a finished data preparation, the same
bytes plan nothing and new bytes under the old mtime plan prepare_data and what reads its output.
"""

from __future__ import annotations

import json
import os
import re
import time

import numpy as np
import pytest
import yaml
from test_workflow import REPO, snakemake, write_config

from diffmem import fingerprint as fp
from diffmem.errors import ConfigError


@pytest.fixture
def hashed(monkeypatch) -> list[str]:
    """The files hash_file reads, in order."""
    calls = []
    real = fp.hash_file

    def counting(path):
        calls.append(os.fspath(path))
        return real(path)

    monkeypatch.setattr(fp, "hash_file", counting)
    return calls


@pytest.fixture
def trusted(monkeypatch):
    """Trust the times of files however new (the tests write them a moment before hashing; outside tests
    a file changed within RACY_NS is hashed again every time)."""
    monkeypatch.setattr(fp, "RACY_NS", -(10**18))


def write_files(folder, count: int = 5, *, seed: int = 0) -> list:
    """`count` files of 64 random bytes named 000.png, 001.png, ... (listed as images, never decoded)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = [folder / f"{i:03d}.png" for i in range(count)]
    for path in paths:
        path.write_bytes(rng.bytes(64))
    return paths


def rewrite_keeping_mtime(path, content: bytes) -> None:
    """New bytes, same size, the old mtime put back: what `cp -p` of another file or an archive leaves."""
    before = os.stat(path)
    assert len(content) == before.st_size
    time.sleep(0.05)  # past the coarse kernel clock tick, so ctime moves
    path.write_bytes(content)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_mtime_ns, after.st_size, after.st_ino) == (before.st_mtime_ns, before.st_size, before.st_ino)


def test_same_content_same_fingerprint_wherever_and_whenever_written(tmp_path):
    write_files(tmp_path / "a")
    write_files(tmp_path / "b")
    os.utime(tmp_path / "b" / "001.png", ns=(0, 0))
    first = fp.fingerprint(tmp_path / "a", cache_dir=tmp_path / "cache")
    assert fp.fingerprint(tmp_path / "a", cache_dir=tmp_path / "cache") == first
    assert fp.fingerprint(tmp_path / "b") == first
    write_files(tmp_path / "c", seed=1)
    assert fp.fingerprint(tmp_path / "c") != first
    (tmp_path / "a" / "004.png").rename(tmp_path / "a" / "005.png")  # a renamed file is another listing
    assert fp.fingerprint(tmp_path / "a", cache_dir=tmp_path / "cache") != first


def test_a_change_under_the_old_mtime_changes_the_fingerprint(tmp_path, trusted, hashed):
    paths = write_files(tmp_path / "images")
    cache = tmp_path / "cache"
    before = fp.fingerprint(tmp_path / "images", cache_dir=cache)
    original = paths[2].read_bytes()
    hashed.clear()
    rewrite_keeping_mtime(paths[2], bytes(64))  # same size and inode too: only ctime tells
    after = fp.fingerprint(tmp_path / "images", cache_dir=cache)
    assert after != before and hashed == [os.fspath(paths[2])]
    rewrite_keeping_mtime(paths[2], original)  # the old bytes back: the old fingerprint
    assert fp.fingerprint(tmp_path / "images", cache_dir=cache) == before


def test_a_single_file_under_its_old_mtime(tmp_path, trusted):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((4, 3), dtype=np.float32))
    before = fp.fingerprint(path, cache_dir=tmp_path / "cache")
    rewrite_keeping_mtime(path, path.read_bytes()[:-4] + np.float32(1).tobytes())
    assert fp.fingerprint(path, cache_dir=tmp_path / "cache") != before


def test_a_cache_hit_reads_no_file(tmp_path, trusted, hashed):
    paths = write_files(tmp_path / "images", count=6)
    cache = tmp_path / "cache"
    first = fp.fingerprint(tmp_path / "images", cache_dir=cache)
    assert sorted(hashed) == sorted(map(os.fspath, paths))
    hashed.clear()
    assert fp.fingerprint(tmp_path / "images", cache_dir=cache) == first
    assert hashed == []
    mtime = os.stat(fp.cache_path(tmp_path / "images", cache)).st_mtime_ns
    fp.fingerprint(tmp_path / "images", cache_dir=cache)
    assert os.stat(fp.cache_path(tmp_path / "images", cache)).st_mtime_ns == mtime  # not rewritten unchanged


def test_files_just_written_are_hashed_every_time(tmp_path, hashed):
    """Within RACY_NS of a write, a second write in the same clock tick could leave every time as it
    was, so such a file's hash is not cached."""
    write_files(tmp_path / "images", count=2)
    fp.fingerprint(tmp_path / "images", cache_dir=tmp_path / "cache")
    fp.fingerprint(tmp_path / "images", cache_dir=tmp_path / "cache")
    assert len(hashed) == 4


@pytest.mark.parametrize("garbage", ["{not json", "[]", '{"format": 1, "root": "elsewhere", "files": {}}',
                                     '{"format": 1, "root": "ROOT", "files": {"000.png": [1, 2]}}',
                                     '{"format": 1, "root": "ROOT", "files": {"000.png": "x"}}'])
def test_a_corrupt_cache_is_recomputed(tmp_path, trusted, hashed, garbage):
    paths = write_files(tmp_path / "images", count=3)
    expected = fp.fingerprint(tmp_path / "images")
    store = fp.cache_path(tmp_path / "images", tmp_path / "cache")
    store.parent.mkdir()
    store.write_text(garbage.replace("ROOT", os.path.abspath(tmp_path / "images")))
    hashed.clear()
    assert fp.fingerprint(tmp_path / "images", cache_dir=tmp_path / "cache") == expected
    assert sorted(hashed) == sorted(map(os.fspath, paths))
    assert set(json.loads(store.read_text())["files"]) == {"000.png", "001.png", "002.png"}  # and repaired


def test_the_cache_keeps_the_hashes_of_another_selection(tmp_path, trusted, hashed):
    """Two experiments reading 2 and all 5 images of one folder share its cache without rehashing."""
    write_files(tmp_path / "images", count=5)
    cache = tmp_path / "cache"
    everything = {"dataset": "images", "path": str(tmp_path / "images")}
    fp.data_fingerprint(everything, cache_dir=cache)
    fp.data_fingerprint({**everything, "max_images": 2}, cache_dir=cache)
    hashed.clear()
    fp.data_fingerprint(everything, cache_dir=cache)
    assert hashed == []


def test_only_the_files_the_loader_reads_count(tmp_path):
    paths = write_files(tmp_path / "images", count=4)
    data = {"dataset": "images", "path": str(tmp_path / "images")}
    before = fp.data_fingerprint(data)
    (tmp_path / "images" / "README.md").write_text("where these came from")
    (tmp_path / "images" / ".thumbs.png").write_bytes(b"hidden")
    (tmp_path / "images" / ".cache").mkdir()
    (tmp_path / "images" / ".cache" / "x.png").write_bytes(b"hidden folder")
    assert fp.data_fingerprint(data) == before
    # data.max_images: only the first images in sorted order are read
    first_two = fp.data_fingerprint({**data, "max_images": 2})
    paths[3].write_bytes(paths[0].read_bytes())
    assert fp.data_fingerprint({**data, "max_images": 2}) == first_two
    assert fp.data_fingerprint(data) != before
    (tmp_path / "images" / "sub").mkdir()
    paths[1].rename(tmp_path / "images" / "sub" / "001.png")  # moved: another relative path
    assert fp.data_fingerprint({**data, "max_images": 2}) != first_two


def test_data_without_user_files_has_no_fingerprint(tmp_path):
    assert fp.data_fingerprint({"dataset": "digits"}) is None
    assert fp.data_fingerprint({"dataset": "gmm", "path": str(tmp_path)}) is None  # gmm reads no path
    with pytest.raises(ConfigError, match="does not exist"):
        fp.data_fingerprint({"dataset": "npy", "path": str(tmp_path / "missing.npy")})
    with pytest.raises(ConfigError, match="does not exist"):
        fp.data_fingerprint({"dataset": "images", "path": str(tmp_path / "missing")})


def test_cifar10_counts_its_six_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
                 "batches.meta", "readme.html"):
        (folder / name).write_bytes(name.encode())
    data = {"dataset": "cifar10", "path": str(folder)}
    before = fp.data_fingerprint(data)
    (folder / "readme.html").write_bytes(b"changed")
    assert fp.data_fingerprint(data) == before
    (folder / "test_batch").write_bytes(b"changed")
    assert fp.data_fingerprint(data) != before


# --- Through the workflow: Snakemake's params trigger, with the profile's mtime-only file triggers ---
def planned(workdir, target: str) -> dict[str, int]:
    """rule -> jobs a dry run for `target` plans ({} when there is nothing to do)."""
    out = snakemake(workdir, "-n", target).stdout
    if "Nothing to be done" in out:
        return {}
    table = out[out.index("Job stats:"):].split("Reasons:")[0]
    return {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.M) if rule != "total"}


@pytest.mark.snakemake
def test_the_workflow_reruns_on_new_bytes_under_an_old_mtime(tmp_path):
    path = tmp_path / "points.npy"
    np.save(path, np.random.default_rng(0).standard_normal((40, 3)).astype(np.float32))
    cfg = yaml.safe_load((REPO / "tests" / "smoke_config.yaml").read_text())
    cfg["results_dir"] = "results"
    cfg["experiments"]["smoke"]["data"] = {"dataset": "npy", "path": "points.npy", "n_train": [8], "seeds": [0],
                                           "n_test": 10}
    cfg["experiments"]["smoke"]["quality"]["enabled"] = False
    write_config(tmp_path, cfg)
    target = "results/smoke/runs/n8_seed0/train.npz"
    snakemake(tmp_path, target)  # prepare_data and subsample
    assert planned(tmp_path, target) == {}
    original = path.read_bytes()
    rewrite_keeping_mtime(path, original)  # the same bytes written again: nothing to do
    assert planned(tmp_path, target) == {}
    changed = original[:-4] + np.float32(7).tobytes()
    rewrite_keeping_mtime(path, changed)
    assert planned(tmp_path, target) == {"prepare_data": 1, "subsample": 1}
    assert (tmp_path / "results" / ".fingerprints").is_dir()


def test_the_same_object_saved_twice_has_the_same_bytes(tmp_path):
    """io.atomic_torch_save writes through an open file: torch.save given a path names the archive's inner
    folder after the (random) temporary file, so the classifier retrained to the same weights had other
    bytes, and with them another digest for the quality cache to key on."""
    import torch

    from diffmem.io import atomic_torch_save, sha256_of

    obj = {"args": {"width": 8}, "state": {"w": torch.arange(12.0).reshape(3, 4)}}
    atomic_torch_save(tmp_path / "a" / "classifier.pt", obj)
    atomic_torch_save(tmp_path / "b" / "classifier.pt", obj)
    assert sha256_of(tmp_path / "a" / "classifier.pt") == sha256_of(tmp_path / "b" / "classifier.pt")
    assert torch.equal(torch.load(tmp_path / "a" / "classifier.pt")["state"]["w"], obj["state"]["w"])
