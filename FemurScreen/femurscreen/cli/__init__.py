"""The ``femurscreen`` command: one entry point, one verb per library function.

Each verb lives in its own module in this package and defines ``NAME``, ``HELP``,
``EXAMPLE``, ``ORDER``, ``add_arguments(parser)`` and ``run(args) -> int``. Verbs are found
by scanning the package, so adding a verb never means editing this file.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from types import ModuleType

from femurscreen import __version__
from femurscreen.errors import FemurScreenError

EXIT_OK = 0
EXIT_FAILED = 1  # the input or a model could not be used; the message says why
EXIT_USAGE = 2  # argparse's own code for bad command lines


def _verbs() -> list[ModuleType]:
    modules = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "NAME") and hasattr(module, "run"):
            modules.append(module)
    return sorted(modules, key=lambda m: (getattr(m, "ORDER", 100), m.NAME))


def build_parser() -> argparse.ArgumentParser:
    verbs = _verbs()
    summary = "\n".join(f"  {m.NAME:<18} {m.HELP}" for m in verbs)
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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in verbs:
        example = getattr(module, "EXAMPLE", "")
        p = sub.add_parser(
            module.NAME,
            help=module.HELP,
            description=module.HELP + (f"\n\nexample:\n  {example}" if example else ""),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
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
