"""Atomic file writing: a crash or a full disk never leaves a file that looks complete.

Everything is first written beside its target under a temporary name, then moved into place
with ``os.replace`` (atomic on POSIX within one file system).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; move it onto ``target`` on success.

    The temporary name keeps the target's extension (``suffix`` overrides it) so that writers
    that choose a format by extension, such as SimpleITK, still do the right thing.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(target.suffixes) or ".tmp"
    fd, name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        # mkstemp makes the file private (0600); give the result the permissions a plain
        # open() would, so exported files stay readable by the user's group as usual.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(target: str | Path, text: str) -> Path:
    """Write a text file atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a hidden folder beside ``target``, renamed onto it when the block ends without error.

    An existing ``target`` is replaced only once the new folder is complete; on error the
    hidden folder is removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        _flush_folder(tmp)
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _flush_folder(folder: Path) -> None:
    """Flush the files of ``folder`` so that the rename never publishes unwritten data, and
    give them ordinary permissions (temporary files and folders are created private)."""
    mask = _umask()
    for path in folder.iterdir():
        with contextlib.suppress(OSError):
            os.chmod(path, 0o666 & ~mask)
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    os.chmod(folder, 0o777 & ~mask)
