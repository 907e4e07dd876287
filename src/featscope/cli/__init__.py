"""The ``featscope`` command line: one entry point with sub-commands, one module per command.

Each command module is named after its command; its docstring gives the help line and the description, its
``EPILOG`` (when it has one) the examples, and it has ``add_arguments(parser)`` and ``run(args) -> int``. It imports
nothing heavy at module level, and only the command being run builds its full parser (the solver settings
whose options it derives import torch), so ``featscope --help`` stays fast.
"""

from __future__ import annotations

import argparse
import errno
import sys
import warnings
from collections.abc import Sequence

from featscope.cli import batch, bench, decode, encode, featinv, invert, investigate, layers, report, world
from featscope.cli.options import Command, OneLineParser, command_parser
from featscope.errors import FeatscopeError, OutputError

WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                errno.EISDIR}  # fmt: skip
MODULES = (decode, encode, layers, world, bench, investigate, invert, featinv, batch, report)
COMMANDS = {Command.of(module).name: module for module in MODULES}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``featscope`` parser: every command's options, or with ``command`` only that command's (the others
    are listed with their help line)."""
    from featscope._version import __version__

    parser = OneLineParser(
        prog="featscope",
        description="See what a vision network's feature space encodes, by generating images with diffusion models.",
    )
    parser.add_argument("--version", action="version", version=f"featscope {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for c, module in ((Command.of(m), m) for m in MODULES):
        if command is None or command == c.name:
            module.add_arguments(command_parser(sub, c.name, c.help, c.description, c.epilog))
        else:
            sub.add_parser(c.name, help=c.help)
    return parser


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"featscope: warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``featscope ARGV``; a user mistake is one ``featscope: error:`` line and exit code 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        command = argv[0] if argv and not argv[0].startswith("-") else ""
        args = build_parser(command).parse_args(argv)
        warnings.formatwarning = _one_line_warning
        return COMMANDS[args.command].run(args)
    except FeatscopeError as error:
        print(f"featscope: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # an output that cannot be written: a full disk, a read-only or missing place
        if error.errno not in WRITE_ERRORS:
            raise
        print(f"featscope: error: {OutputError.of(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("featscope: interrupted; no partial result was kept", file=sys.stderr)
        return 130
