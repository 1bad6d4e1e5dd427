"""``svirt`` command line: argv → typed calls → output.

This package alone reads argv, prints and exits. Exit codes: 0 success, 1 a reported
error (``error: <message>`` on stderr, one line), 2 a usage error. ``--debug``
re-raises instead, for a traceback.

Each command group lives in its own module with a ``register(subparsers, common)``
function; :data:`COMMAND_MODULES` lists them in help order.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from svirt import SvirtError, __version__

__all__ = ["COMMANDS", "COMMAND_MODULES", "build_parser", "entry", "main"]

COMMAND_MODULES: tuple[str, ...] = (
    "validate",
    "label",
    "ls",
    "lifecycle",
    "policy",
    "verify",
    "doctor",
    "audit",
    "demo",
    "fleet",  # fleet ledger (issue 15)
    "domblklist",  # tools (issue 14)
)

# Which module defines each command: a run imports only the module of its command, so
# `svirt ls -Z` does not pay for loading QEMU, policy and audit code (help loads all).
COMMANDS: dict[str, str] = {
    "validate": "validate",
    "label": "label",
    "restore": "label",
    "ls": "ls",
    "start": "lifecycle",
    "stop": "lifecycle",
    "list": "lifecycle",
    "dumpxml": "lifecycle",
    "attach-disk": "lifecycle",
    "detach-disk": "lifecycle",
    "policy": "policy",
    "verify": "verify",
    "doctor": "doctor",
    "recover": "doctor",
    "audit": "audit",
    "demo": "demo",
    # fleet ledger (issue 15)
    "migrate-label": "fleet",
    "fleet": "fleet",
    # tools (issue 14)
    "domblklist": "domblklist",
}


# Commands that change labels, owners, ACLs or processes (issue 11: an unprivileged
# start failed with a traceback or a monitor that died without a word).
_ROOT_COMMANDS = frozenset({"start", "stop", "label", "restore", "attach-disk", "detach-disk"})


def _command_module(argv: Sequence[str]) -> str | None:
    """The module of the first command word in argv, skipping --config's value."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--config":
            skip = True
            continue
        if arg.startswith("-"):
            continue
        return COMMANDS.get(arg)
    return None


def _common_options(suppress: bool) -> argparse.ArgumentParser:
    """Options accepted before and after the subcommand (``svirt label --config F X``).

    After the subcommand the defaults are suppressed, so a value given before it is not
    overwritten by the subparser's default.
    """
    p = argparse.ArgumentParser(add_help=False)
    default = argparse.SUPPRESS
    # tools (issue 14): one titled group, so every command's help and the man page show
    # these apart from the command's own options.
    g = p.add_argument_group("common options")
    g.add_argument(
        "--config",
        metavar="FILE",
        default=default if suppress else None,
        help="svirt.conf to use (default /etc/svirt/svirt.conf)",
    )
    g.add_argument(
        "--json",
        action="store_true",
        default=default if suppress else False,
        help="print data as JSON",
    )
    g.add_argument(
        "--debug",
        action="store_true",
        default=default if suppress else False,
        help="log debug messages and show tracebacks",
    )
    return p


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="svirt",
        description="sVirt for Python: SELinux MCS isolation of QEMU virtual machines.",
        parents=[_common_options(suppress=False)],
    )
    parser.add_argument("--version", action="version", version=f"svirt {__version__}")
    sub = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")  # tools
    sub.required = True
    common = _common_options(suppress=True)
    only = _command_module(argv) if argv is not None else None
    for name in (only,) if only is not None else COMMAND_MODULES:
        module = importlib.import_module(f"svirt.cli.{name}")
        module.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s: %(message)s",
    )
    command = getattr(args, "command", None)
    if command in _ROOT_COMMANDS and os.geteuid() != 0:
        print(
            f"error: svirt {command} must run as root (it changes labels, owners and "
            "ACLs and starts QEMU as another user)",
            file=sys.stderr,
        )
        return 1
    try:
        rc: int = args.func(args)
        sys.stdout.flush()
        return rc
    except SvirtError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (svirt ... | head): stop quietly, like a SIGPIPE death,
        # and keep Python from complaining again when it flushes stdout at exit.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 1
    except OSError as exc:
        if args.debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
