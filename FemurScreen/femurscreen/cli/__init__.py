"""The ``femurscreen`` command: one entry point, one verb per library function.

Each verb lives in its own module in this package and defines ``NAME``, ``HELP``,
``EXAMPLE``, ``ORDER``, ``add_arguments(parser)`` and ``run(args) -> int``. Verbs are found
by scanning the package, so adding a verb never means editing this file. The constants are read
from the source without importing it, and only the verb being run is imported: start-up stays
fast however heavy a verb's libraries are.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import logging
import pkgutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from femurscreen import __version__
from femurscreen.errors import FemurScreenError

EXIT_OK = 0
EXIT_FAILED = 1  # the input or a model could not be used; the message says why
EXIT_USAGE = 2  # argparse's own code for bad command lines


@dataclass(frozen=True)
class Verb:
    """What the top-level help needs to know of a verb, read without importing it."""

    module: str
    name: str
    help: str
    example: str
    order: int


def _constants(path: Path) -> dict[str, object]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name) and target.id in {"NAME", "HELP", "EXAMPLE", "ORDER"}:
                with contextlib.suppress(ValueError):
                    found[target.id] = ast.literal_eval(node.value)
    return found


def verbs() -> list[Verb]:
    """All verbs of the package, in listing order."""
    found = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        c = _constants(Path(__path__[0]) / f"{info.name}.py")
        if "NAME" in c:
            found.append(
                Verb(
                    module=f"{__name__}.{info.name}",
                    name=str(c["NAME"]),
                    help=str(c.get("HELP", "")),
                    example=str(c.get("EXAMPLE", "")),
                    order=int(cast(int, c.get("ORDER", 100))),
                )
            )
    return sorted(found, key=lambda v: (v.order, v.name))


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only the verb named ``command`` (if any) is imported and given options."""
    all_verbs = verbs()
    summary = "\n".join(f"  {v.name:<18} {v.help}" for v in all_verbs)
    parser = argparse.ArgumentParser(
        prog="femurscreen",
        description=(
            "Opportunistic osteoporosis screening on abdominal/pelvic CT.\n\n"
            f"commands:\n{summary}\n\n"
            "Run 'femurscreen COMMAND --help' for the options and an example of each."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"femurscreen {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", help="one of the commands above")
    for verb in all_verbs:
        description = verb.help + (f"\n\nexample:\n  {verb.example}" if verb.example else "")
        p = sub.add_parser(
            verb.name,
            description=description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if verb.name == command:
            module = importlib.import_module(verb.module)
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def _command_in(argv: list[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    for stream in (sys.stdout, sys.stderr):  # never crash on a '–' in an ASCII-only terminal
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    parser = build_parser(_command_in(argv))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:  # these log source UIDs at INFO: identifiers stay out of the console
        for name in ("highdicom", "dicomweb_client"):
            logging.getLogger(name).setLevel(logging.WARNING)
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args._run(args) or EXIT_OK)
    except FemurScreenError as exc:
        print(f"femurscreen {args.command}: error: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"femurscreen {args.command}: interrupted", file=sys.stderr)
        return 130
