"""What the benchmark scripts share: the phantom CT they time, and a process pinned to N cores."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path


def make_abdomen_phantom(folder: Path, seed: int = 0) -> Path:
    """One abdomen-size phantom CT (512 x 512 x ~300), made once per folder and seed."""
    ct = folder / "case_0000" / "ct.nii.gz"
    if not ct.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "femurscreen", "phantom", str(folder), "--cases", "1"]
        command += ["--size", "abdomen", "--seed", str(seed)]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    if not ct.is_file():
        raise SystemExit(f"no CT at {ct} after 'femurscreen phantom'")
    return ct


def pinned(cores: int) -> tuple[dict[str, str], Callable[[], None]]:
    """Environment and ``preexec_fn`` that keep a child process on the first ``cores`` CPUs."""
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(cores)
    cpus = sorted(os.sched_getaffinity(0))[:cores]
    return env, lambda: os.sched_setaffinity(0, cpus)
