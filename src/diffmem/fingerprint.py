"""Content fingerprints of the files a user points the config at, so that a result computed from other
bytes is never served from the cache.

The workflow profile turns Snakemake's `input` trigger off and trusts timestamps (docs/reruns.md); a
file copied with `cp -p` or `rsync -t`, or restored from an archive, can change content and keep an old
mtime. So the workflow adds `data_fingerprint(data)` (the files `data.path` names) and
`fingerprint(path)` (e.g. `quality.inception_weights`) to the tracked params of the rules that read
them: new content reruns them, whatever the timestamps, and unchanged content reruns nothing.

A fingerprint is the sha256 over the sorted relative paths and the sha256 of each file's bytes. For a
folder only the files the loader reads count (`diffmem.images`' own listing: image suffixes, no hidden
files, the first `data.max_images`), so a README or a `.DS_Store` beside the images changes nothing.

Hashing 200,000 small files takes about 15 s even from the page cache, too long for every dry run, so
each file's hash is cached, keyed on (size, st_mtime_ns, st_ctime_ns, st_ino): a user can set the
mtime back but not the ctime, which the kernel sets on every write, so changed content is hashed
again even under an old mtime; unchanged files are stat'ed, not read. The cache is one JSON file per
root under `cache_dir`, written atomically and only when it changed; an unreadable or corrupt cache
is recomputed. Timings: `python benchmarks/bench_fingerprint.py` (docs/benchmarks.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

from diffmem.errors import ConfigError
from diffmem.images import cifar10_files, list_image_files
from diffmem.io import atomic_write_text, sha256_of

CACHE_FORMAT = 1
# A hash is not cached while the file changed less than this long ago: a second write within one tick
# of a coarse filesystem clock (FAT: 2 s) would leave size and times as they were when it was hashed.
RACY_NS = 3_000_000_000


hash_file = sha256_of  # the one name every file is hashed through (tests count its calls)


def cache_path(root: str | Path, cache_dir: str | Path) -> Path:
    """The cache file of the per-file hashes under `root` (one per absolute path)."""
    key = hashlib.sha256(os.path.abspath(root).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{key}.json"


def _load_cache(path: Path, root: str) -> dict[str, list]:
    """relative path -> [size, mtime_ns, ctime_ns, ino, sha256]; {} for a missing, foreign or corrupt file."""
    try:
        blob = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(blob, dict) or blob.get("format") != CACHE_FORMAT or blob.get("root") != root:
        return {}
    files = blob.get("files")
    return files if isinstance(files, dict) else {}


def _relative_paths(root: str, files: Sequence[str | Path]) -> list[tuple[str, str]]:
    """Sorted (path relative to root with '/' separators, path) of files under root; string slicing
    where it can, as pathlib's relative_to costs seconds over 200,000 files."""
    prefix = os.path.join(root, "")
    out = []
    for f in files:
        path = os.fspath(f)
        if path.startswith(prefix) and root not in ("", "."):
            rel = path[len(prefix):]
        else:
            rel = os.path.relpath(path, root)
            if rel == ".." or rel.startswith(".." + os.sep):
                raise ValueError(f"{path} is not under {root}")
        out.append((rel.replace(os.sep, "/"), path))
    return sorted(out)


def _hash_or_reuse(path: str, entry, now_ns: int) -> tuple[str, list | None]:
    """(sha256 of path, its cache entry or None while it is too new to trust), reusing `entry` when
    size, mtime, ctime and inode still match it."""
    try:
        st = os.stat(path)  # before reading: a write while hashing changes ctime, so is seen next time
        key = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        if isinstance(entry, list) and len(entry) == 5 and entry[:4] == key and isinstance(entry[4], str):
            digest = entry[4]
        else:
            digest = hash_file(path)
    except OSError as exc:
        raise ConfigError(f"data error: cannot read {path} ({exc.strerror})") from exc
    fresh = now_ns - max(st.st_mtime_ns, st.st_ctime_ns) <= RACY_NS
    return digest, None if fresh else [*key, digest]


def fingerprint(root: str | Path, files: Sequence[str | Path] | None = None, *,
                cache_dir: str | Path | None = None) -> str:
    """sha256 (hex) of the file `root`, or of the folder `root`: its sorted relative paths, each with the
    sha256 of its bytes, over `files` (paths under root; default every file under it, recursive).

    cache_dir: where the per-file hashes are kept between calls (None: no cache, hash every file)."""
    root = os.fspath(root)
    if not os.path.exists(root):
        raise ConfigError(f"data error: {root} does not exist")
    if os.path.isdir(root):
        if files is None:
            files = [os.path.join(d, f) for d, _, names in os.walk(root) for f in names]
        named = _relative_paths(root, files)
    else:
        named = [(".", root)]
    root_abs = os.path.abspath(root)
    store = cache_path(root, cache_dir) if cache_dir is not None else None
    cached = _load_cache(store, root_abs) if store is not None else {}
    kept, now_ns, total = {}, time.time_ns(), hashlib.sha256()
    for rel, path in named:
        digest, entry = _hash_or_reuse(path, cached.get(rel), now_ns)
        if entry is not None:
            kept[rel] = entry
        total.update(f"{rel}\0{digest}\n".encode())
    if store is not None:
        _save_cache(store, root_abs, kept, cached, visited={rel for rel, _ in named})
    return total.hexdigest()


def _save_cache(store: Path, root: str, kept: dict, cached: dict, *, visited: set[str]) -> None:
    """Write the cache if it changed; hashes of files another selection of the root reads (a larger
    data.max_images) are kept while those files exist."""
    for rel, entry in cached.items():
        if rel not in visited and rel != "." and os.path.isfile(os.path.join(root, rel)):
            kept[rel] = entry
    if kept == cached:
        return
    try:
        atomic_write_text(store, json.dumps({"format": CACHE_FORMAT, "root": root, "files": kept},
                                            separators=(",", ":")))
    except OSError:
        pass  # a read-only results folder: still correct, only slower next time


def data_files(data: dict) -> tuple[Path, list[Path]] | None:
    """(root, files) a data config's loader reads from the user (diffmem.data.prepare_dataset), or None
    for data it generates or ships with (digits, gmm, gaussian)."""
    kind, path = data["dataset"], data.get("path")
    if not path:
        return None
    if kind == "npy":
        return Path(path), [Path(path)]
    if kind in ("images", "celeba"):
        return Path(path), list_image_files(path, max_images=data.get("max_images"))
    if kind == "cifar10":
        return Path(path), cifar10_files(path)
    return None


def data_fingerprint(data: dict, *, cache_dir: str | Path | None = None) -> str | None:
    """fingerprint() of the files a data config's loader reads, or None when it reads none."""
    found = data_files(data)
    if found is None:
        return None
    root, files = found
    return fingerprint(root, files if root.is_dir() else None, cache_dir=cache_dir)
