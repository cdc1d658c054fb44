"""Run the ``femurscreen`` command line in-process and capture what it prints (one helper for
the test files that call verbs the way a user types them)."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout

from femurscreen.cli import main


def run_cli(*argv: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``femurscreen ARGV``; argparse's exits become codes."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()
