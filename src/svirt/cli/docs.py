"""The man page and the bash and zsh completions of ``svirt``, generated from its parser.

Nothing here is written by hand: argparse-manpage renders :func:`svirt.cli.main.build_parser`
as ``svirt(1)`` and shtab turns the same parser into completion scripts, so a new command
or option is documented and completed as soon as it is parsed. ``scripts/setup.sh`` runs
``python -m svirt.cli.docs install`` (idempotent: a file is written only when it differs);
``make man-completion`` does the same by hand. ``check`` exits 1, naming the stale files,
when the installed files are not what the parser gives now.

Both libraries are development tools (pyproject's ``dev`` extra), imported only here.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from svirt import __version__

__all__ = ["INSTALL_PATHS", "generate", "install", "main", "stale", "walk"]

# Where distributions' own tools look (man-db's MANPATH; bash-completion's loader reads
# $XDG_DATA_DIRS/bash-completion/completions, /usr/local/share first; Debian's zsh has
# /usr/local/share/zsh/site-functions in $fpath): local, never dpkg's /usr/share.
INSTALL_PATHS: dict[str, Path] = {
    "man": Path("/usr/local/share/man/man1/svirt.1"),
    "bash": Path("/usr/local/share/bash-completion/completions/svirt"),
    "zsh": Path("/usr/local/share/zsh/site-functions/_svirt"),
}

# Arguments that name files: completed with file names.
_FILE_METAVARS = frozenset({"DOMAIN.xml", "DISK.xml", "PATH", "FILE"})

_DESCRIPTION = "SELinux MCS isolation of QEMU virtual machines, libvirt-compatible"

_OVERVIEW = (
    "svirt gives each virtual machine a unique pair of MCS categories, relabels its disks "
    "and other resources to match, and runs QEMU under that label as an unprivileged user "
    "in a private /dev; when QEMU exits it restores every original label and owner, "
    "remembered in the trusted.libvirt.security.* extended attributes libvirt writes, so "
    "svirt and libvirt can share a host. It also searches audit logs and explains SELinux "
    "denials from the real policy, proves isolation between running VMs, and finds and "
    "repairs stale state."
)

_EXTRA_SECTIONS: tuple[tuple[str, str], ...] = (
    (
        "exit status",
        "0 on success, 1 on a reported error (one line on standard error, libvirt's text "
        "where libvirt has one), 2 on a usage error. The common options are accepted "
        "before and after the command.",
    ),
    (
        "files",
        ".TP\n/etc/svirt/svirt.conf\nthe configuration (TOML; qemu.conf's key names where "
        "qemu.conf has the setting)",
    ),
    (
        "see also",
        ".BR virsh (1),\n.BR ausearch (8),\n.BR audit2why (1),\n.BR chcon (1),\n"
        ".BR getfattr (1),\n.BR selinux (8)",
    ),
)


def walk(
    parser: argparse.ArgumentParser,
    path: tuple[str, ...] = ("svirt",),
    help: str | None = None,
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, str | None]]:
    """Every parser under ``parser`` (itself first) with its command words and the
    one-line help its parent lists it with."""
    yield path, parser, help
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield from walk(sub, (*path, name), helps.get(name))


def _parser() -> argparse.ArgumentParser:
    from svirt.cli.main import build_parser

    parser = build_parser()
    import shtab

    for _path, sub, _help in walk(parser):
        for action in sub._actions:
            if action.metavar in _FILE_METAVARS:
                action.complete = shtab.FILE  # type: ignore[attr-defined]
        # argparse-manpage prints groups in order and a command group's subcommands in
        # place: the group holding them goes last, or a command's own options would be
        # printed after its last subcommand, as if they were that subcommand's.
        sub._action_groups.sort(
            key=lambda g: any(isinstance(a, argparse._SubParsersAction) for a in g._group_actions)
        )
    return parser


def _manpage(parser: argparse.ArgumentParser) -> str:
    from argparse_manpage.manpage import Manpage

    page = Manpage(
        parser,
        _data={
            "project_name": "svirt",
            "version": __version__,
            "manual_title": "svirt manual",
            "description": _DESCRIPTION,
            # no date: the page must be the same bytes whenever it is generated, so the
            # installed copy can be compared with a fresh one
            "date": " ",
        },
        format="single-commands-section",
    )
    for heading, content in _EXTRA_SECTIONS:
        page.add_section(heading, ">", content)
    # DESCRIPTION: the parser's one line, then what svirt does (argparse-manpage prints
    # an added description before the parser's, so both go in the added one).
    page.add_section("description", "=", f"{parser.description}\n.PP\n{_OVERVIEW}")
    parser.description = None
    return str(page)


@contextlib.contextmanager
def _columns(width: int) -> Iterator[None]:
    """argparse wraps usage and help at the terminal's width: fix it, so the page is the
    same bytes from a terminal, a pipe or setup."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    try:
        yield
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def generate() -> dict[str, str]:
    """The three files: ``man`` (roff), ``bash`` and ``zsh`` completion scripts."""
    import shtab

    with _columns(80):
        man = _manpage(_parser())
        parser = _parser()
        # zsh's menu shows a command's description in place of its help when it has
        # one: a paragraph there hides the other commands, so the menu gets the one-line
        # help the man page and --help list the commands with.
        for path, sub, _help in walk(parser):
            if len(path) > 1:
                sub.description = None
        return {
            "man": man,
            "bash": shtab.complete(parser, shell="bash"),
            "zsh": shtab.complete(parser, shell="zsh"),
        }


def stale(paths: dict[str, Path] | None = None) -> list[Path]:
    """The installed files that are missing or differ from freshly generated ones."""
    paths = INSTALL_PATHS if paths is None else paths
    fresh = generate()
    out = []
    for kind, path in paths.items():
        try:
            ok = path.read_text() == fresh[kind]
        except OSError:
            ok = False
        if not ok:
            out.append(path)
    return out


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def install(paths: dict[str, Path] | None = None) -> list[Path]:
    """Write each file whose content differs; returns the files written."""
    paths = INSTALL_PATHS if paths is None else paths
    fresh = generate()
    written = []
    for kind, path in paths.items():
        try:
            same = path.read_text() == fresh[kind]
        except OSError:
            same = False
        if not same:
            _write(path, fresh[kind])
            written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m svirt.cli.docs",
        description="Generate svirt's man page and bash/zsh completions from its parser.",
    )
    sub = ap.add_subparsers(dest="action", required=True)
    w = sub.add_parser("write", help="write svirt.1, svirt.bash and _svirt into DIR")
    w.add_argument("dir", metavar="DIR")
    sub.add_parser("install", help="install them where man, bash and zsh look")
    sub.add_parser("check", help="exit 1 when the installed files are stale")
    args = ap.parse_args(argv)
    if args.action == "write":
        d = Path(args.dir)
        names = {"man": "svirt.1", "bash": "svirt.bash", "zsh": "_svirt"}
        for kind, text in generate().items():
            _write(d / names[kind], text)
            print(d / names[kind])
        return 0
    if args.action == "install":
        for path in install():
            print(f"installed {path}")
        return 0
    old = stale()
    for path in old:
        print(f"stale: {path} (run scripts/setup.sh)", file=sys.stderr)
    return 1 if old else 0


if __name__ == "__main__":
    sys.exit(main())
