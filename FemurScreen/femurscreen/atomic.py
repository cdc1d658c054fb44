"""Atomic file writing: a crash or a full disk never leaves a file that looks complete.

Everything is first written beside its target under a temporary name, then moved into place
with ``os.replace`` (atomic on POSIX within one file system).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Collection, Iterator
from pathlib import Path

from femurscreen.errors import InputError


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


OWNER_FILE = ".femurscreen-owner"  # inside a temporary folder: which process builds it
_TMP_INFIX = ".tmp-"


@contextlib.contextmanager
def atomic_dir(target: str | Path, owned: Collection[str] | None = None) -> Iterator[Path]:
    """Yield a hidden folder beside ``target``, renamed onto it when the block ends without error.

    An existing ``target`` is replaced only once the new folder is complete; on error the
    hidden folder is removed and ``target`` is left as it was. Entries of the old ``target``
    that the new folder does not hold, and whose names are not in ``owned`` (the names this
    writer produces), are moved into the new folder: files a user put beside a result are
    never deleted by writing the result again. Hidden folders left by a killed earlier writer
    of the same ``target`` are removed first (see :func:`remove_stale_temp`).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}{_TMP_INFIX}", dir=target.parent))
    try:
        (tmp / OWNER_FILE).write_text(
            json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}),
            encoding="utf-8",
        )
        yield tmp
        (tmp / OWNER_FILE).unlink(missing_ok=True)
        _flush_folder(tmp)
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            _carry_over(old, target, set(owned or ()))
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _carry_over(old: Path, new: Path, owned: set[str]) -> None:
    """Move the entries of ``old`` that ``new`` lacks and the writer does not own into ``new``."""
    for entry in old.iterdir():
        if entry.name in owned or entry.name == OWNER_FILE or (new / entry.name).exists():
            continue
        with contextlib.suppress(OSError):
            os.replace(entry, new / entry.name)


def remove_stale_temp(target: str | Path) -> list[Path]:
    """Remove hidden temporary folders of ``target`` whose writer is dead; return them.

    Only folders named like ours (``.NAME.tmp-*`` beside ``target``) that hold our owner file
    are considered, and only when that file names a process on this machine that no longer
    runs. A folder being written by a live process, or by another machine (a Dask worker),
    is left alone, and so is anything else in the folder.
    """
    target = Path(target)
    removed: list[Path] = []
    if not target.parent.is_dir():
        return removed
    for candidate in target.parent.glob(f".{glob.escape(target.name)}{_TMP_INFIX}*"):
        if candidate.is_dir() and not candidate.is_symlink() and _writer_is_dead(candidate):
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
    return removed


def _writer_is_dead(folder: Path) -> bool:
    try:
        owner = json.loads((folder / OWNER_FILE).read_text(encoding="utf-8"))
        pid, host = int(owner["pid"]), str(owner["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return False  # not ours, or not ours to judge
    return host == socket.gethostname() and not process_alive(pid)


def process_alive(pid: int) -> bool:
    """True when a process with this id runs on this machine (or cannot be checked)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    if os.name == "nt":  # pragma: no cover - os.kill(pid, 0) would terminate it on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _flush_folder(folder: Path) -> None:
    """Flush the files of ``folder`` so that the rename never publishes unwritten data, and
    give them ordinary permissions (temporary files and folders are created private)."""
    mask = _umask()
    for path in folder.iterdir():
        with contextlib.suppress(OSError):
            if path.is_dir():  # a subfolder (e.g. dicom/): enterable, and its files flushed too
                _flush_folder(path)
                continue
            os.chmod(path, 0o666 & ~mask)
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    os.chmod(folder, 0o777 & ~mask)


# --------------------------------------------------------------------------------------------
# Destination checks, run before any computation so that a bad --out fails in a second


def check_output_folder(target: str | Path, option: str = "--out") -> Path:
    """Refuse a folder destination that cannot be written, before the work starts.

    The writers above need to create a hidden entry beside ``target`` and rename it, so the
    nearest existing parent must be a writable folder; ``target`` itself, if it exists, must
    be a folder. Nothing is created here.
    """
    target = Path(target).expanduser()
    if target.exists() and not target.is_dir():
        raise InputError(
            f"{option} points to an existing file, not a folder",
            f"give {option} a folder name (new or holding an earlier result)",
            target,
        )
    _check_parent_writable(target, option)
    return target


def check_output_file(
    target: str | Path, suffixes: Collection[str], option: str = "--out", what: str = "file"
) -> Path:
    """Refuse a file destination that is a folder, has an unsupported suffix or is not writable."""
    target = Path(target).expanduser()
    names = ", ".join(suffixes)
    example = "femur" + next(iter(suffixes), ".out")
    if target.is_dir() or str(target).endswith(("/", os.sep)):
        raise InputError(
            f"{option} points to a folder, but a {what} is written to one file",
            f"give {option} a file name ending in {names}, e.g. {target / example}",
            target,
        )
    if not target.name.lower().endswith(tuple(s.lower() for s in suffixes)):
        suffix = "".join(target.suffixes) or "no extension"
        raise InputError(
            f"{option} has {suffix}, which is not a {what} format FemurScreen writes",
            f"end the name in one of {names}",
            target,
        )
    _check_parent_writable(target, option)
    return target


def _check_parent_writable(target: Path, option: str) -> None:
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(
            f"{option} lies under {parent}, which is a file, not a folder",
            f"choose another {option}",
            target,
        )
    try:  # os.access is not enough: it says yes to root on a read-only file system
        probe = Path(tempfile.mkdtemp(prefix=".femurscreen-write-test-", dir=parent))
    except OSError as exc:
        raise InputError(
            f"cannot write there: the folder {parent} is not writable ({exc.strerror or exc})",
            f"choose an {option} in a folder you can write to, or fix its permissions",
            target,
        ) from None
    probe.rmdir()
