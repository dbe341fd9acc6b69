"""The ``compress`` command line: one module per command, errors as one line, exit code 2.

Every flag comes from an ``Options`` dataclass (a technique's config, the data and
training recipes, a study, a command's own options), so ``--help`` shows each default
and choice, and the same names reach the records and the Python API.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence

from compress import interrupts
from compress.cli import (
    analysis,
    compare,
    export,
    listing,
    profile,
    report,
    reproduce,
    run,
    study,
)
from compress.cli.common import OneLineParser
from compress.errors import UsageError, first_line
from compress.reports import error_console

COMMANDS = (profile, listing, run, compare, export, reproduce, report, analysis, study)


def build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog="compress",
        description="Compare CNN compression techniques by accuracy per FLOP, param and ms.",
    )
    parser.add_argument("--version", action="version", version=f"compress {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_to(commands)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("compress-cnn")
    except PackageNotFoundError:  # run from a checkout that is not installed
        return "(not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    # torch says at import that this machine has no CUDA runtime: --device says as much.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    args = build_parser().parse_args(argv)
    handler: Callable[..., int | None] = args.handler
    interrupts.install()  # SIGTERM ends a command as Ctrl-C does: checkpoint, status, 130
    try:
        return handler(args) or 0
    except UsageError as error:
        error_console.print(
            f"compress {args.command}: error: {error}", highlight=False, soft_wrap=True
        )
        return 2
    except KeyboardInterrupt:  # `run` says more; studies keep every finished trial
        return _interrupted(args.command)
    except OSError as error:  # the file system said no: full, read-only, a name too long
        where = f": {error.filename}" if error.filename else ""
        reason = error.strerror or first_line(error)
        error_console.print(
            f"compress {args.command}: error: {reason}{where}", highlight=False, soft_wrap=True
        )
        return 2
    except Exception:
        if interrupts.requested():  # a library turned the Ctrl-C into an error of its own
            return _interrupted(args.command)
        raise
    finally:  # the command is over: an interrupt it got stops nothing after it
        interrupts.handled()


def _interrupted(command: str) -> int:
    error_console.print(f"compress {command}: interrupted", highlight=False)
    return 130


if __name__ == "__main__":
    sys.exit(main())
