"""svirt(1) and the bash/zsh completions, generated from the parser (issue 14 item 6).

Every check walks the parser (``svirt.cli.docs.walk``), so commands and options added
later are covered without editing this file. The shells and man are the real ones that
scripts/setup.sh installs (man-db, bash-completion, zsh).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from svirt.cli import docs
from svirt.cli.main import build_parser

ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C", "LANG": "C"}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("docs")
    names = {"man": "svirt.1", "bash": "svirt.bash", "zsh": "_svirt"}
    out = {}
    for kind, text in docs.generate().items():
        (d / names[kind]).write_text(text)
        out[kind] = d / names[kind]
    return out


def _commands() -> list[tuple[tuple[str, ...], argparse.ArgumentParser, str | None]]:
    return list(docs.walk(build_parser()))[1:]


def _documented(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)
        and a.help != argparse.SUPPRESS
    ]


def _words(text: str) -> str:
    return " ".join(text.split())


def test_every_command_and_option_has_a_help_text() -> None:
    """The man page and zsh's menu print these; an empty one reads as a hole."""
    missing = []
    for path, parser, help_ in _commands():
        if not help_ or "\n" in help_:
            missing.append(f"{' '.join(path)}: no one-line help= in add_parser")
        for action in _documented(parser):
            if not action.help:
                name = "/".join(action.option_strings) or action.metavar or action.dest
                missing.append(f"{' '.join(path)} {name}: no help=")
    assert not missing, "\n".join(missing)


def test_man_page_renders_cleanly_and_documents_every_command_and_option(
    generated: dict[str, Path],
) -> None:
    page = generated["man"]
    groff = subprocess.run(
        ["groff", "-man", "-ww", "-z", str(page)], capture_output=True, text=True, env=ENV
    )
    assert groff.returncode == 0 and groff.stderr == ""
    man = subprocess.run(
        ["man", "--warnings", "--nh", "--nj", "-l", str(page)],
        capture_output=True,
        text=True,
        env={**ENV, "MANWIDTH": "100"},
    )
    assert man.returncode == 0 and man.stderr == ""
    text = man.stdout
    assert text.startswith("SVIRT(1)")
    assert re.search(r"^NAME\n\s+svirt - \S", text, re.M)
    for heading in ("SYNOPSIS", "DESCRIPTION", "COMMANDS", "EXIT STATUS", "SEE ALSO"):
        assert re.search(rf"^{heading}$", text, re.M), heading

    # Cut the page at each command's heading ("   svirt audit search").
    commands = _commands()
    headings = {" ".join(path) for path, _p, _h in commands}
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() in headings]
    assert {lines[i].strip() for i in starts} == headings, "a command has no section"
    ends = [*starts[1:], len(lines)]
    sections = {
        lines[i].strip(): "\n".join(lines[i:end]) for i, end in zip(starts, ends, strict=True)
    }
    top = "\n".join(lines[: starts[0]])
    for action in _documented(build_parser()):
        for opt in action.option_strings:
            assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", top), opt
        assert action.help and _words(action.help) in _words(top)
    for path, parser, help_ in commands:
        name = " ".join(path)
        body = sections[name]
        assert help_ and _words(help_) in _words(body), f"{name}: its help is not shown"
        for action in _documented(parser):
            # a positional as argparse shows it: its metavar, or {a,b} for choices
            invocation = parser._get_formatter()._format_action_invocation(action)
            words = action.option_strings or [invocation]
            for word in words:
                assert re.search(rf"(?<![\w-]){re.escape(str(word))}(?![\w-])", body), (
                    f"{name}: {word} is not documented"
                )
            assert action.help and _words(action.help % vars(action)) in _words(body), (
                f"{name}: the help of {words[0]} is not shown"
            )


def _bash(script: Path, lines: list[str], cwd: Path) -> list[list[str]]:
    """Drive the completion function the way bash does: COMP_WORDS/COMP_CWORD set, the
    function that ``complete -p svirt`` names called with (command, word, previous)."""
    calls = []
    for line in lines:
        words = shlex.split(line) + ([""] if line.endswith(" ") else [])
        calls.append(
            f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)}); "
            f"COMP_CWORD={len(words) - 1}; COMP_LINE={shlex.quote(line)}; "
            "COMP_POINT=${#COMP_LINE}; COMPREPLY=(); "
            '"$fn" svirt "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"; '
            "printf '%s\\t' \"${COMPREPLY[@]}\"; echo"
        )
    program = (
        f"source {shlex.quote(str(script))}\n"
        "spec=$(complete -p svirt) || exit 3\n"
        'fn=$(sed -E "s/.* -F ([^ ]+) .*/\\1/" <<< "$spec")\n' + "\n".join(calls) + "\n"
    )
    out = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=cwd,
        check=True,
    )
    return [sorted(w for w in row.split("\t") if w) for row in out.stdout.splitlines()]


def test_bash_completion_completes_commands_subcommands_options_and_files(
    generated: dict[str, Path], tmp_path: Path
) -> None:
    commands = _commands()
    top = sorted(p[1] for p, _parser, _h in commands if len(p) == 2)
    (tmp_path / "dom.xml").write_text("<domain/>")
    lines = ["svirt st", "svirt audit se", "svirt stop --t", "svirt --config x.conf dom"]
    lines.append(f"svirt start {tmp_path}/do")
    # every command's long options, after "--"
    lines += [f"{' '.join(path)} --" for path, _p, _h in commands]
    got = _bash(generated["bash"], lines, tmp_path)
    assert got[0] == [c for c in top if c.startswith("st")] == ["start", "stop"]
    assert got[1] == ["search"]
    assert got[2] == ["--timeout"]
    assert got[3] == [c for c in top if c.startswith("dom")] and "domblklist" in got[3]
    assert got[4] == [f"{tmp_path}/dom.xml"]
    for (path, parser, _h), row in zip(commands, got[5:], strict=True):
        longs = sorted({o for a in parser._actions for o in a.option_strings if o.startswith("--")})
        assert row == longs, " ".join(path)


def test_zsh_completion_loads_with_compinit_and_defines_svirt(
    generated: dict[str, Path], tmp_path: Path
) -> None:
    fdir = generated["zsh"].parent
    assert generated["zsh"].read_text().startswith("#compdef svirt\n")
    program = (
        f"fpath=({shlex.quote(str(fdir))} $fpath)\n"
        "autoload -Uz compinit && compinit -u -d $ZDOTDIR/.zcompdump\n"
        "print -r -- comps=$_comps[svirt]\n"
        "autoload +X _svirt && (( $+functions[_svirt] )) && print -r -- defined\n"
        "functions _svirt\n"
    )
    zdot = tmp_path / "zdot"
    zdot.mkdir()
    out = subprocess.run(
        ["zsh", "-f", "-c", program],
        capture_output=True,
        text=True,
        env={**ENV, "ZDOTDIR": str(zdot), "HOME": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    assert "comps=_svirt\n" in out.stdout and "defined\n" in out.stdout
    body = out.stdout
    script = generated["zsh"].read_text()
    for path, _parser, help_ in _commands():
        # each command is offered by name in its parent's menu, with its one-line help
        assert re.search(rf"(^|[\s(]){re.escape(path[-1])}:'", body, re.M), " ".join(path)
        quoted = (help_ or "").replace("'", "'\"'\"'")
        assert f"{path[-1]}:'{quoted}'" in script, " ".join(path)
    assert (zdot / ".zcompdump").exists()


# Real zsh completion, driven through a pseudo-terminal (zsh/zpty): for each line a fresh
# interactive `zsh -f` runs compinit on the generated file's directory, a completion widget
# wraps _main_complete and records every match compadd is given into OUT.N, and the line
# is typed followed by that widget's key. DONE/READY files say when each step is over.
ZSH_DRIVER = r"""
zmodload zsh/zpty
out=$1; dir=$2; shift 2
cat > $out.rc <<'RC'
fpath=($CAPTURE_FPATH $fpath)
autoload -Uz compinit && compinit -u -d $CAPTURE.zcompdump
_cap() {
  compadd() {
    local -a __h
    builtin compadd -O __h "$@"
    (( $#__h )) && print -rl -- $__h >> $CAPTURE.$CAPTURE_N
    builtin compadd "$@"
  }
  _main_complete
  unfunction compadd
  print x >> $CAPTURE.done
}
zle -C cap-complete complete-word _cap
bindkey '^T' cap-complete
print x >> $CAPTURE.ready
RC
wait_for() {
  local i junk
  for i in {1..500}; do
    while zpty -r -t z junk '*?'; do :; done
    [[ -f $1 ]] && (( ${#${(f)"$(<$1)"}} >= $2 )) && return 0
    sleep 0.02
  done
  return 1
}
n=0
for line in "$@"; do
  (( n++ ))
  : > $out.$n
  zpty z "zsh -f -i"
  zpty -w z "CAPTURE=$out CAPTURE_N=$n CAPTURE_FPATH=$dir"
  zpty -w z "source $out.rc"
  wait_for $out.ready $n || { print -u2 "zsh did not start for: $line"; exit 1 }
  zpty -w -n z "$line"$'\x14'
  wait_for $out.done $n || { print -u2 "no completion for: $line"; exit 1 }
  zpty -d z
done
"""


def test_zsh_completion_really_completes(generated: dict[str, Path], tmp_path: Path) -> None:
    commands = _commands()
    top = {p[1] for p, _parser, _h in commands if len(p) == 2}
    (tmp_path / "dom.xml").write_text("<domain/>")
    lines = [
        "svirt ",
        "svirt st",
        "svirt audit se",
        "svirt stop --t",
        "svirt domblklist --d",
        f"svirt start {tmp_path}/do",
    ]
    out = tmp_path / "out"
    run = subprocess.run(
        ["zsh", "-f", "-c", ZSH_DRIVER, "zsh", str(out), str(generated["zsh"].parent), *lines],
        capture_output=True,
        text=True,
        env={**ENV, "HOME": str(tmp_path), "ZDOTDIR": str(tmp_path), "TERM": "xterm"},
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    got = [set(Path(f"{out}.{n}").read_text().split()) for n in range(1, len(lines) + 1)]
    assert got[0] == top
    assert got[1] == {c for c in top if c.startswith("st")} == {"start", "stop"}
    assert got[2] == {"search"}
    assert got[3] == {"--timeout"}
    assert got[4] == {"--debug", "--details"}
    assert "dom.xml" in got[5]


def test_installed_files_are_the_ones_the_parser_gives_now() -> None:
    """About host paths: what scripts/setup.sh installed for man, bash and zsh."""
    old = docs.stale()
    assert not old, (
        "installed man page/completions differ from the parser: run scripts/setup.sh "
        f"(or make man-completion) to regenerate {', '.join(map(str, old))}"
    )
    # ... and each tool finds them where it looks by itself
    where = subprocess.run(["man", "-w", "svirt"], capture_output=True, text=True, env=ENV)
    assert os.path.realpath(where.stdout.strip()) == os.path.realpath(docs.INSTALL_PATHS["man"])
    loader = subprocess.run(
        [
            "bash",
            "--norc",
            "--noprofile",
            "-c",
            "source /usr/share/bash-completion/bash_completion; __load_completion svirt; "
            "complete -p svirt",
        ],
        capture_output=True,
        text=True,
        env={**ENV, "HOME": "/nonexistent"},
    )
    assert re.search(r"-F \S+ svirt$", loader.stdout.strip()), loader.stderr
    fpath = subprocess.run(
        ["zsh", "-f", "-c", "print -l $fpath"], capture_output=True, text=True, env=ENV
    )
    assert str(docs.INSTALL_PATHS["zsh"].parent) in fpath.stdout.split()


def test_generated_files_do_not_depend_on_the_terminal_width(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """argparse wraps at $COLUMNS: setup (no terminal) and a user's wide terminal must
    generate the same bytes, or the installed-files check would cry wolf."""
    monkeypatch.setenv("COLUMNS", "200")
    wide = docs.generate()
    monkeypatch.setenv("COLUMNS", "50")
    assert docs.generate() == wide
