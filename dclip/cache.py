"""What dclip keeps on disk between sessions, in one home: ``$DCLIP_CACHE`` (default ``~/.cache/dclip``), one
folder per kind (``latents/`` of Alg. 1 step 1, ``finetuned/`` models, ``samples/``).

Writes are atomic (a temporary file in the same folder, then ``os.replace``): a process killed while writing
leaves no partial file under the final name. Entries are safetensors files whose metadata record what they were
computed from and a checksum of their tensors; :func:`load_checked` gives ``None``, with a warning that names the
file, for an entry that cannot be read, fails its checksum, holds non-finite values or answers another request,
so that the caller computes it again. Non-finite tensors are never written. After each write the oldest entries
are removed while the cache is larger than ``$DCLIP_CACHE_MAX_GB`` (default 20).

    python -m dclip.cache list [--kind latents]
    python -m dclip.cache clear [--kind finetuned] [--older-than DAYS]
"""

from __future__ import annotations

import argparse
import math
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from dclip.hashing import tensor_checksum

#: The kinds of entries dclip writes, one folder each under :func:`cache_root`.
KINDS = ("latents", "finetuned", "samples")
DEFAULT_MAX_GB = 20.0
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class StaleCacheWarning(UserWarning):
    """A cache entry was unreadable or did not match the request; it is computed again."""


class CacheWriteWarning(UserWarning):
    """A result could not be written to the cache (a full disk, a folder that became read-only): it is returned,
    and kept in memory for the rest of the session, but not on disk."""


def cache_root() -> Path:
    """The cache's home: ``$DCLIP_CACHE``, else ``~/.cache/dclip``, read at every call (so a variable set after
    ``import dclip``, as on Colab, is used everywhere at once). ``$DCLIP_CACHE`` naming something that exists and
    is not a folder is a ``ValueError`` naming the variable."""
    raw = os.environ.get("DCLIP_CACHE")
    root = Path(raw or Path.home() / ".cache" / "dclip").expanduser()
    if root.exists() and not root.is_dir():
        where = f"DCLIP_CACHE={raw!r}" if raw else f"the default cache {root}"
        raise ValueError(f"{where} is a file, not a folder: set DCLIP_CACHE to a folder (it is created if missing)")
    return root


def cache_dir(kind: str) -> Path:
    """The folder of one kind of entry (:data:`KINDS`)."""
    if kind not in KINDS:
        raise ValueError(f"unknown cache kind {kind!r}: use one of {KINDS}")
    return cache_root() / kind


def cache_path(kind: str, name: str) -> Path:
    """The path of entry ``name`` of ``kind``; ``name`` is a plain file name (letters, digits, ``._-``)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"cache entry name {name!r} must be a plain file name (letters, digits, '.', '_', '-')")
    return cache_dir(kind) / name


def resolve_dir(folder: str | Path | None, kind: str) -> Path | None:
    """Where a cached computation of ``kind`` goes: ``"default"`` is :func:`cache_dir` (resolved now), None no
    cache, anything else that folder."""
    if folder is None:
        return None
    if isinstance(folder, str) and folder == "default":
        return cache_dir(kind)
    if not isinstance(folder, (str, Path)):
        raise ValueError(f"cache_dir={folder!r} must be a folder path, 'default' (the dclip cache) or None (no cache)")
    return Path(folder).expanduser()


def ensure_writable(folder: Path) -> Path:
    """Create ``folder`` if needed and write (then remove) a small file in it, so that a read-only or full cache is
    a clear ``OSError`` before any expensive work, not after it."""
    hint = "set DCLIP_CACHE to a writable folder, or pass cache_dir=None to compute without the cache"
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"the cache folder {folder} is a file: {hint}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".probe.", suffix=".tmp", dir=folder)
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(name)
    except OSError as e:
        raise type(e)(e.errno, f"cannot write to the cache folder {folder} ({e.strerror}): {hint}") from None
    return folder


def atomic_write(path: str | Path, writer: Callable[[Path], object]) -> Path:
    """Call ``writer(tmp)`` to write a temporary file next to ``path``, flush it to disk, then rename it to
    ``path`` in one step (``os.replace``): readers see the old file or the whole new one, never a partial one.
    The temporary file is removed when ``writer`` fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        writer(tmp)
        os.chmod(tmp, 0o644)  # as an ordinary new file (mkstemp makes it private)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _nonfinite(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    return [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def save_tensors_atomic(
    path: str | Path, tensors: Mapping[str, torch.Tensor], *, metadata: Mapping[str, object] | None = None
) -> Path:
    """Write ``tensors`` to the safetensors file ``path`` atomically (:func:`atomic_write`), with ``metadata``
    (values stored as strings), the package version and a checksum; then, for a file in the cache, keep the cache
    under its size cap (:func:`prune`).
    Raises ``ValueError`` (and writes nothing) when a tensor holds NaN or inf: non-finite results are never cached."""
    from safetensors.torch import save_file

    from dclip.version import package_version

    path = Path(path)
    bad = _nonfinite(tensors)
    if bad:
        raise ValueError(f"not writing {path}: {', '.join(bad)} hold non-finite values (NaN or inf)")
    data = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {**{k: str(v) for k, v in (metadata or {}).items()}, "dclip": package_version()}
    meta["checksum"] = tensor_checksum(data)
    atomic_write(path, lambda tmp: save_file(data, str(tmp), metadata=meta))
    if cache_root().resolve() in path.resolve().parents:
        prune(keep=path.resolve())
    return path


#: Results whose write to the cache failed, by the path they were meant for: kept for the rest of the session so
#: that the work is not lost and not redone (:func:`keep_in_memory`, :func:`kept`).
_KEPT: dict[str, object] = {}


def keep_in_memory(path: str | Path, value: object, error: OSError, *, save_hint: str) -> None:
    """Keep ``value`` (a result whose write to ``path`` failed with ``error``) in memory and say so with a
    :class:`CacheWriteWarning` that names the file, the reason and how to save the result elsewhere."""
    _KEPT[str(Path(path))] = value
    warnings.warn(
        f"could not write {path} ({error.strerror or error}): the result is returned and kept in memory for this "
        f"session, but not on disk. To keep it, free space or set DCLIP_CACHE to a writable folder, or "
        f"{save_hint}",
        CacheWriteWarning,
        stacklevel=3,
    )


def kept(path: str | Path) -> object | None:
    """A result kept in memory by :func:`keep_in_memory` for ``path``, or None."""
    return _KEPT.get(str(Path(path)))


def load_checked(
    path: str | Path,
    *,
    expect: Mapping[str, object] | None = None,
    check: Callable[[dict[str, torch.Tensor], dict[str, str]], str | None] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
    """The tensors and metadata of a cache entry written by :func:`save_tensors_atomic`, or ``None`` when there is
    none. An entry that cannot be read, fails its checksum, holds non-finite values, was written by another version
    of dclip, whose metadata differ from ``expect`` (compared as strings) or for which ``check(tensors, metadata)``
    returns a reason, also gives ``None``, with a :class:`StaleCacheWarning` naming the file: the caller computes it
    again and overwrites it."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # truncated, empty, garbage: safetensors raises its own error types
        return _stale(path, f"cannot be read ({type(e).__name__}: {e})")
    if meta.get("checksum") != tensor_checksum(tensors):
        return _stale(path, "does not match its checksum (truncated, altered or not written by dclip)")
    from dclip.version import package_version

    for key, value in {"dclip": package_version(), **(expect or {})}.items():
        if meta.get(key) != str(value):
            return _stale(path, f"holds {key}={meta.get(key)!r} where {str(value)!r} was asked")
    bad = _nonfinite(tensors)
    if bad:
        return _stale(path, f"holds non-finite values in {', '.join(bad)}")
    reason = check(tensors, meta) if check is not None else None
    if reason:
        return _stale(path, reason)
    os.utime(path)  # last use: the size cap removes the least recently used entries first
    return tensors, meta


def _stale(path: Path, reason: str) -> None:
    warnings.warn(f"cache entry {path} {reason}; computing it again", StaleCacheWarning, stacklevel=3)
    return None


@dataclass
class Entry:
    """One cache entry: its files (a fine-tuned model has weights and a card) with their total size."""

    kind: str
    name: str
    files: list[Path]
    bytes: int
    mtime: float


def entries(kind: str | None = None) -> list[Entry]:
    """The entries of one kind, or of all kinds, oldest first; a temporary file left by a killed writer is an
    entry of its own (named ``.<name>.<random>.tmp``) until :func:`clear` or :func:`prune` removes it."""
    groups: dict[tuple[str, str], list[Path]] = {}
    for k in [kind] if kind else KINDS:
        folder = cache_dir(k)
        if folder.is_dir():
            for f in folder.iterdir():
                if f.is_file():
                    groups.setdefault((k, f.name if f.suffix == ".tmp" else f.stem), []).append(f)
    found = [
        Entry(k, name, files, sum(f.stat().st_size for f in files), max(f.stat().st_mtime for f in files))
        for (k, name), files in groups.items()
    ]
    return sorted(found, key=lambda e: e.mtime)


def _remove(entry: Entry) -> None:
    for f in entry.files:
        f.unlink(missing_ok=True)


def clear(kind: str | None = None, *, older_than_days: float | None = None) -> tuple[int, int]:
    """Remove the entries of ``kind`` (all kinds by default) last used more than ``older_than_days`` ago (all by
    default); returns (entries removed, bytes freed)."""
    if older_than_days is not None and not (math.isfinite(older_than_days) and older_than_days >= 0):
        raise ValueError(f"older_than_days={older_than_days} must be a finite number of days >= 0")
    cutoff = time.time() - older_than_days * 86400 if older_than_days is not None else float("inf")
    gone = [e for e in entries(kind) if e.mtime < cutoff]
    for e in gone:
        _remove(e)
    return len(gone), sum(e.bytes for e in gone)


def max_bytes() -> int:
    """The size cap: ``$DCLIP_CACHE_MAX_GB`` gigabytes (default 20)."""
    raw = os.environ.get("DCLIP_CACHE_MAX_GB", str(DEFAULT_MAX_GB))
    try:
        gb = float(raw)
    except ValueError:
        raise ValueError(f"DCLIP_CACHE_MAX_GB={raw!r} must be a number of gigabytes") from None
    if not gb > 0:
        raise ValueError(f"DCLIP_CACHE_MAX_GB={raw!r} must be a positive number of gigabytes")
    return int(gb * 2**30)


def prune(*, keep: Path | None = None, limit: int | None = None) -> list[Entry]:
    """Remove the least recently used entries (never the one holding ``keep``) while the cache exceeds ``limit``
    bytes (default :func:`max_bytes`), and temporary files older than an hour; returns what was removed."""
    limit = max_bytes() if limit is None else limit
    all_entries = entries()
    total = sum(e.bytes for e in all_entries)
    removed = []
    for e in all_entries:
        orphan = e.name.endswith(".tmp") and e.mtime < time.time() - 3600
        if (total > limit or orphan) and not (
            keep is not None and Path(keep).resolve() in {f.resolve() for f in e.files}
        ):
            _remove(e)
            removed.append(e)
            total -= e.bytes
    return removed


def _size(n: int) -> str:
    """Bytes for people: 512 B, 96.3 kB, 10.5 MB, 1.2 GB."""
    if n < 1024:
        return f"{n} B"
    power = next(p for p in (3, 2, 1) if n >= 1024**p)
    return f"{n / 1024**power:.1f} {('kB', 'MB', 'GB')[power - 1]}"


def _days(text: str) -> float:
    """An ``--older-than`` age: a finite number of days >= 0."""
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days") from None
    if not math.isfinite(days) or days < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number of days >= 0 (0: every entry)")
    return days


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m dclip.cache", description="See or clear dclip's cache.")
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="entries with their sizes and ages")
    ls.add_argument("--kind", choices=KINDS)
    cl = sub.add_parser("clear", help="remove entries")
    cl.add_argument("--kind", choices=KINDS)
    cl.add_argument("--older-than", type=_days, default=None, metavar="DAYS", help="only entries unused this long")
    a = p.parse_args(argv)
    try:
        cache_root()
    except ValueError as e:
        p.error(str(e))
    if a.command == "list":
        found = entries(a.kind)
        print(f"{cache_root()} (cap {_size(max_bytes())})")
        for e in found:
            days = (time.time() - e.mtime) / 86400
            print(f"{e.kind:10s} {_size(e.bytes):>9s} {days:6.1f} days  {e.name}")
        print(f"{len(found)} entries, {_size(sum(e.bytes for e in found))}")
    else:
        n, freed = clear(a.kind, older_than_days=a.older_than)
        print(f"removed {n} entries, {_size(freed)} from {cache_root()}")


if __name__ == "__main__":
    main()
