"""Run a command in a child process without blocking Slicer, and stop it with all its children.

Why a process and not a thread: segmentation runs PyTorch for tens of seconds; in a thread it
would hold the interpreter that Slicer's GUI also needs, and it could not be cancelled. Like
SlicerMONAIAuto3DSeg, the child's output is read by background threads into a queue; the
caller drains the queue from the GUI thread (the widget polls with a Qt timer, tests call
``wait``). This module has no Qt: it only starts, reads and kills.

The child gets its own process group (POSIX) or process group flag (Windows), so cancelling
kills the whole tree: the Python interpreter and any worker processes it started.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

CANCELLED = -1000  # return code reported after cancel()


@dataclass(frozen=True)
class OutputLine:
    """One line the child wrote; stream is "stdout" or "stderr"."""

    stream: str
    text: str


class BackgroundProcess:
    """A child process whose stdout and stderr are collected line by line."""

    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> None:
        self.args = [str(a) for a in args]
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None
        self.cancelled = False
        self.started_at = 0.0
        self._queue: queue.Queue[OutputLine] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._stdout: list[str] = []
        self._stderr: list[str] = []

    def start(self) -> BackgroundProcess:
        kwargs: dict = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(
                subprocess, "CREATE_NO_WINDOW", 0
            )
        else:
            kwargs["start_new_session"] = True  # own process group: cancel kills the tree
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            cwd=self.cwd,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            **kwargs,
        )
        for name, stream in (("stdout", self.proc.stdout), ("stderr", self.proc.stderr)):
            thread = threading.Thread(target=self._read, args=(name, stream), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _read(self, name: str, stream) -> None:
        for line in iter(stream.readline, ""):
            self._queue.put(OutputLine(name, line.rstrip("\r\n")))
        stream.close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.returncode is None and self.proc.poll() is None

    def poll(self) -> list[OutputLine]:
        """Lines written since the last call; sets ``returncode`` once the child is done."""
        lines: list[OutputLine] = []
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            (self._stdout if line.stream == "stdout" else self._stderr).append(line.text)
            lines.append(line)
        done = self.proc is not None and self.returncode is None and self.proc.poll() is not None
        if done and all(not t.is_alive() for t in self._threads) and self._queue.empty():
            self.returncode = CANCELLED if self.cancelled else self.proc.returncode
        return lines

    @property
    def finished(self) -> bool:
        return self.returncode is not None

    @property
    def stdout(self) -> str:
        return "\n".join(self._stdout)

    @property
    def stderr(self) -> str:
        return "\n".join(self._stderr)

    def wait(self, timeout: float | None = None, poll: Callable[[], object] | None = None) -> int:
        """Block until the child is done (for scripts and tests; the GUI polls instead).

        ``poll`` (default: :meth:`poll`) is what reads the output meanwhile; a job passes its
        own so that it sees every line (progress, messages).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.finished:
            (poll or self.poll)()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.args[:3]} still running after {timeout} s")
            time.sleep(0.05)
        return int(self.returncode)

    def cancel(self) -> None:
        """Kill the child and every process it started."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.cancelled = True
        kill_tree(self.proc.pid)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - the OS refused to kill
            self.proc.kill()


def kill_tree(pid: int) -> None:
    """Kill a process started by ``BackgroundProcess`` and all of its descendants."""
    try:
        import psutil  # shipped with Slicer and most environments; optional here
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            parent = psutil.Process(pid)
            for child in parent.children(recursive=True):
                child.kill()
            parent.kill()
            return
        except psutil.NoSuchProcess:
            return
    if os.name == "nt":  # pragma: no cover - Windows only
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(pid)], capture_output=True, check=False)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)


def python_executable() -> str:
    """The Python that runs the core: Slicer's ``PythonSlicer`` inside Slicer, else this one.

    Inside Slicer ``sys.executable`` is the Slicer application itself, so (as
    SlicerTotalSegmentator and SlicerMONAIAuto3DSeg do) the ``PythonSlicer`` launcher, which
    sets up Slicer's Python environment, is looked up on the PATH.
    """
    import shutil

    try:
        import slicer

        in_slicer = hasattr(slicer, "app")
    except ImportError:
        in_slicer = False
    if in_slicer:
        found = shutil.which("PythonSlicer")
        if found:
            return found
    return sys.executable
