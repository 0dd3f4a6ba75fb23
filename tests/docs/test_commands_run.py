"""The commands of the documentation run: every ``prn`` line of README.md's code blocks and every ``Example:``
line of ``prn <cmd> --help``, in README order, in one fresh folder, on a small synthetic set.

A new user copies the README's blocks top to bottom; so does this test. It extracts from README.md's fenced
code blocks every command line that starts with ``prn `` (optionally after ``VAR=value`` assignments, such as
``OMP_NUM_THREADS=1``), joining lines that end in ``\\``, dropping ``# comments``, and skipping the set-up
commands (``python3 -m venv ... pip install ...``, which CI runs itself) and ``python`` blocks (they are run
as Python, in their place in the sequence). Then it takes the ``Example:`` line of every command's docstring
(what ``--help`` prints). Each command runs through ``bash -c`` in the one temporary folder, so quoting, pipes
and ``$(...)`` work as in a terminal; ``prn`` there is a small script on ``PATH`` that runs ``python -m prn_cli``
with this interpreter (through a fork server that has imported prn's CLI and torch once: tests/prn_forkserver.py).
The folder links ``examples/``, ``models/`` and ``tests/`` from the repository, whose
root the README's commands are run from.

To make it cheap, the test rewrites the commands, and only like this (:func:`rewrite`):

- ``--n N`` (prn synth) -> at most 6 images;
- training (``train base``, ``train prn``, ``ablate``): ``--iters 2``, ``--batch-size 2``, ``--crop 64``,
  ``--checkpoint-every 1``, ``--val-every 0``, ``--val-limit 2`` (replaced where given, added where not, when the
  command has the option); ``--batch-size`` given to other commands -> 2;
- ``--threads 1`` where the command has the option;
- a ``--help`` example whose ``--out`` already exists from an earlier command gets ``--overwrite`` (README
  commands do not: the README must work top to bottom as written);
- a ``prn segment ... --resume`` line ("after an interruption") is preceded by the same command without
  ``--resume`` (with ``--overwrite``), interrupted with SIGINT after its first image: it must exit 130 with one
  line that says to rerun with ``--resume``. If it finishes first, its JSON is removed (an interruption before
  the JSON was written).

A command identical to one already run is not run again. Skipped, with the reason listed: ``torchrun`` (no
process group here), ``--device cuda`` (no GPU is assumed), ``| jq`` when jq is not installed.

The cheap test at the end checks that every ``prn`` command in README.md, models/README.md, examples/*.sh and
the ``--help`` examples names a real command and only options that command has.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"

SMALL_N = 6
TRAINING = {("train", "base"), ("train", "prn"), ("ablate",)}
#: flag -> value for the training commands (replaced, or added when the command has the option)
TRAINING_SETTINGS = {"--iters": "2", "--batch-size": "2", "--crop": "64", "--checkpoint-every": "1",
                     "--val-every": "0", "--val-limit": "2"}
#: what the repository provides to commands run from its root
LINKED = ("examples", "models", "tests")


# ----------------------------------------------------------------------------------------------------------------
# extraction


@dataclass
class Command:
    text: str                   # the shell command as documented (continuations joined, comment removed)
    source: str                 # "README.md:123" or "prn segment --help"
    kind: str = "shell"         # "shell" or "python"
    origin: str = "readme"      # "readme" or "help"


def _strip_comment(line: str) -> str:
    """``line`` without a trailing shell ``# comment`` (a ``#`` at the start or after a blank, outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def code_blocks(text: str) -> list[tuple[str, int, list[str]]]:
    """(language, line number of the first line, lines) of every fenced code block."""
    blocks, lang, start, lines = [], None, 0, []
    for n, line in enumerate(text.splitlines(), start=1):
        if line.startswith("```"):
            if lang is None:
                lang, start, lines = line[3:].strip() or "text", n + 1, []
            else:
                blocks.append((lang, start, lines))
                lang = None
        elif lang is not None:
            lines.append(line)
    return blocks


def block_commands(start: int, lines: list[str]) -> list[tuple[int, str]]:
    """(line number, command) of a shell block: continuations joined, comments dropped."""
    out, buf, first = [], [], None
    for n, raw in enumerate(lines, start=start):
        line = _strip_comment(raw)
        if not buf and not line.strip():
            continue
        if first is None:
            first = n
        if line.endswith("\\"):
            buf.append(line[:-1].strip())
            continue
        buf.append(line.strip())
        out.append((first, " ".join(b for b in buf if b)))
        buf, first = [], None
    if buf:
        out.append((first, " ".join(buf)))
    return out


_ENV = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*")


def command_word(cmd: str) -> str:
    """The program a command line runs, after any ``VAR=value`` assignments."""
    rest = cmd[_ENV.match(cmd).end():]
    return rest.split(maxsplit=1)[0] if rest.strip() else ""


def is_setup(cmd: str) -> bool:
    return "pip install" in cmd or "venv" in cmd


def readme_commands(path: Path = README) -> list[Command]:
    """Every prn command, torchrun line and python block of ``path``, in order."""
    found = []
    for lang, start, lines in code_blocks(path.read_text()):
        if lang == "python":
            found.append(Command("\n".join(lines), f"{path.relative_to(REPO)}:{start}", kind="python"))
            continue
        for n, cmd in block_commands(start, lines):
            if is_setup(cmd):
                continue
            if command_word(cmd) in ("prn", "torchrun"):
                found.append(Command(cmd, f"{path.relative_to(REPO)}:{n}"))
    return found


def _walk(app, prefix=()):
    for info in app.registered_commands:
        yield (*prefix, info.name), info.callback
    for group in app.registered_groups:
        yield from _walk(group.typer_instance, (*prefix, group.name))


def help_examples() -> list[Command]:
    """The ``Example: prn ...`` line of every command's docstring (what its ``--help`` prints), in CLI order."""
    from prn_cli.cli import app

    found = []
    for path, callback in _walk(app):
        doc = callback.__doc__ or ""
        for m in re.finditer(r"Example:\s*(prn\b(?:[^\n]*\\\n)*[^\n]*)", doc):
            text = re.sub(r"\\\n\s*", " ", m.group(1))
            found.append(Command(" ".join(text.split()), f"prn {' '.join(path)} --help", origin="help"))
    return found


# ----------------------------------------------------------------------------------------------------------------
# parsing a prn command line


def _scan_top_level(cmd: str):
    """Yield (index, char, at_top_level) of ``cmd``: outside quotes and ``$(...)``."""
    quote, depth, i = None, 0, 0
    while i < len(cmd):
        ch = cmd[i]
        if quote:
            if ch == quote:
                quote = None
            yield i, ch, False
        elif ch in "'\"":
            quote = ch
            yield i, ch, False
        elif cmd.startswith("$(", i):
            depth += 1
            yield i, ch, False
        elif ch == ")" and depth:
            depth -= 1
            yield i, ch, False
        else:
            yield i, ch, depth == 0
        i += 1


def split_prn_part(cmd: str) -> tuple[str, str]:
    """(the prn command, the rest: a pipe or redirection that follows it)."""
    for i, ch, top in _scan_top_level(cmd):
        if top and ch in "|>":
            # a file-descriptor redirection (``2> log``) belongs with its ``>``
            if ch == ">" and i >= 2 and cmd[i - 1].isdigit() and cmd[i - 2].isspace():
                i -= 1
            return cmd[:i].rstrip(), cmd[i:]
    return cmd, ""


def prn_tokens(cmd: str) -> list[str]:
    """The arguments after ``prn`` (or ``-m prn_cli``), with each ``$(...)`` as one placeholder token."""
    part, _ = split_prn_part(cmd)
    plain, i = [], 0
    while i < len(part):
        if part.startswith("$(", i):
            depth, j = 0, i
            while j < len(part):
                if part.startswith("$(", j):
                    depth += 1
                    j += 2
                    continue
                if part[j] == ")":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            plain.append(" SUBSTITUTION ")
            i = j + 1
            continue
        plain.append(part[i])
        i += 1
    words = shlex.split("".join(plain))
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words.pop(0)
    if words and words[0] == "prn":
        return words[1:]
    if "prn_cli" in words:
        return words[words.index("prn_cli") + 1:]
    raise AssertionError(f"not a prn command: {cmd}")


def resolve(tokens: list[str]):
    """(click command, its path) for the subcommand words at the start of ``tokens``."""
    import typer

    from prn_cli.cli import app

    cmd, path = typer.main.get_command(app), []
    while hasattr(cmd, "commands") and tokens[len(path):] and tokens[len(path)] in cmd.commands:
        cmd = cmd.commands[tokens[len(path)]]
        path.append(cmd.name)
    return cmd, tuple(path)


def option_names(click_cmd) -> set[str]:
    names = {"--help", "-h"}
    for p in click_cmd.params:
        names.update(p.opts)
        names.update(p.secondary_opts)
    return names


def flags_of(tokens: list[str]) -> list[str]:
    return [t.split("=", 1)[0] for t in tokens if t.startswith("-") and t not in ("-",) and not _is_number(t)]


def _is_number(t: str) -> bool:
    try:
        float(t)
        return True
    except ValueError:
        return False


# ----------------------------------------------------------------------------------------------------------------
# rewriting


def _set_flag(part: str, flag: str, value: str, add: bool) -> str:
    pattern = re.compile(rf"(?<=\s){re.escape(flag)}(?:\s+|=)(\S+)")
    if pattern.search(part):
        return pattern.sub(f"{flag} {value}", part)
    return f"{part} {flag} {value}" if add else part


def rewrite(cmd: str, *, overwrite: bool = False) -> str:
    """The cheap version of ``cmd`` (see the module docstring); torchrun lines are returned as they are."""
    if command_word(cmd) != "prn":
        return cmd
    part, rest = split_prn_part(cmd)
    click_cmd, path = resolve(prn_tokens(cmd))
    names = option_names(click_cmd)
    if path == ("synth",):
        m = re.search(r"(?<=\s)--n(?:\s+|=)(\d+)", part)
        if m and int(m.group(1)) > SMALL_N:
            part = _set_flag(part, "--n", str(SMALL_N), add=False)
    if path in TRAINING:
        for flag, value in TRAINING_SETTINGS.items():
            if flag in names:
                part = _set_flag(part, flag, value, add=True)
    elif "--batch-size" in names:
        part = _set_flag(part, "--batch-size", "2", add=False)
    if "--threads" in names:
        part = _set_flag(part, "--threads", "1", add=True)
    if overwrite and "--overwrite" not in part.split():
        part += " --overwrite"
    return f"{part} {rest}".strip() if rest else part


def out_dir(cmd: str) -> str | None:
    tokens = prn_tokens(cmd)
    for i, t in enumerate(tokens[:-1]):
        if t in ("--out", "-o"):
            return tokens[i + 1]
    return None


def skip_reason(cmd: str) -> str | None:
    if command_word(cmd) == "torchrun":
        return "torchrun: no process group on the test machine"
    if re.search(r"--device(\s+|=)cuda", cmd):
        return "--device cuda: no GPU is assumed"
    if "| jq" in cmd and shutil.which("jq") is None:
        return "jq is not installed"
    return None


# ----------------------------------------------------------------------------------------------------------------
# running


@dataclass
class Runner:
    root: Path
    env: dict
    ran: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    def bash(self, cmd: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", cmd], cwd=self.root, env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def check(self, source: str, cmd: str, proc, expect: int = 0) -> None:
        if proc.returncode != expect:
            self.failed.append(f"{source}: exit {proc.returncode} (expected {expect})\n  $ {cmd}\n"
                               f"  stderr: {proc.stderr.strip()[-3000:]}")

    def interrupt(self, source: str, cmd: str) -> None:
        """Run ``cmd`` and interrupt it (SIGINT) after its first image; expect exit 130 and a --resume hint."""
        out = self.root / out_dir(cmd)
        progress = out / ".segment-progress.jsonl"
        proc = subprocess.Popen(["bash", "-c", cmd], cwd=self.root, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            if progress.exists() and progress.read_text().strip():
                os.killpg(proc.pid, signal.SIGINT)
                break
            time.sleep(0.02)
        stdout, stderr = proc.communicate(timeout=300)
        self.log.append(f"{source}: interrupted run exited {proc.returncode}")
        if proc.returncode == 0:            # it finished first: an interruption before the JSON was written
            (out / "panoptic.json").unlink()
            return
        done = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
        self.check(f"{source} (interrupted)", cmd, done, expect=130)
        last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        if proc.returncode == 130 and "--resume" not in last:
            self.failed.append(f"{source}: Ctrl-C did not end with one line saying to rerun with --resume; "
                               f"stderr: {stderr[-500:]}")

    def run(self, c: Command) -> None:
        if c.kind == "python":
            script = self.root / f"_block_{len(self.ran)}.py"
            script.write_text(c.text)
            proc = subprocess.run([sys.executable, str(script)], cwd=self.root, env=self.env, capture_output=True,
                                  text=True, timeout=600)
            self.ran.append(f"{c.source}: python block")
            self.log.append(f"{c.source}: python block, exit {proc.returncode}")
            self.check(c.source, c.text, proc)
            return
        reason = skip_reason(c.text)
        if reason:
            self.skipped.append((c.source, c.text, reason))
            return
        overwrite = False
        if c.origin == "help":
            out = out_dir(c.text)
            overwrite = out is not None and (self.root / out).exists()
        cmd = rewrite(c.text, overwrite=overwrite)
        if cmd in self.ran:
            self.skipped.append((c.source, cmd, "identical to a command already run"))
            return
        tokens = prn_tokens(cmd)
        if resolve(tokens)[1] == ("segment",) and "--resume" in tokens:
            first = cmd.replace(" --resume", "")
            self.interrupt(c.source, first if "--overwrite" in first else first + " --overwrite")
        start = time.monotonic()
        proc = self.bash(cmd)
        self.ran.append(cmd)
        self.log.append(f"{c.source}: {time.monotonic() - start:5.1f} s  exit {proc.returncode}  $ {cmd}")
        self.check(c.source, cmd, proc)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The one folder the commands run in, with ``prn`` on PATH: a client of a fork server that has imported
    prn's CLI and torch once (tests/prn_forkserver.py), so that each command does not pay the import again."""
    root = tmp_path_factory.mktemp("docs-run")
    bin_dir = root / ".bin"
    bin_dir.mkdir()
    for name in LINKED:
        (root / name).symlink_to(REPO / name, target_is_directory=True)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1",
           "COLUMNS": "120"}
    env.pop("PRN_DEBUG", None)          # the documented exit codes are those without --debug
    server_script = REPO / "tests" / "prn_forkserver.py"
    sock = bin_dir / "prn.sock"
    server = subprocess.Popen([sys.executable, str(server_script), "serve", str(sock)], cwd=root, env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready", "the prn fork server did not start"
        wrapper = bin_dir / "prn"
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "{server_script}" "{sock}" "$@"\n')
        wrapper.chmod(0o755)
        yield Runner(root, env)
    finally:
        server.kill()
        server.wait()


@pytest.mark.slow
def test_readme_and_help_examples_run(workdir):
    commands = readme_commands() + help_examples()
    assert len(commands) > 30
    for c in commands:
        workdir.run(c)
    report = ["commands run:"] + workdir.log + ["skipped:"] + [f"{s}: {r}  $ {c}" for s, c, r in workdir.skipped]
    print("\n".join(report))
    for source, cmd, reason in workdir.skipped:
        assert reason.startswith(("torchrun", "--device cuda", "jq", "identical")), (source, reason)
    assert not workdir.failed, "\n\n".join(workdir.failed) + "\n\n" + "\n".join(report)
    # what the README says these commands leave behind
    root = workdir.root
    for path in ("base/panoptic.json", "refined/panoptic.json", "viz/index.html", "panels/index.html",
                 "results.json", "changes.json", "base_run/model_final.pt", "prn_run/model_final.pt",
                 "table1/table.md", "ablate450/table.json", "prn-demo/viz/index.html"):
        assert (root / path).exists(), path


# ----------------------------------------------------------------------------------------------------------------
# the cheap check: every documented prn command parses


def documented_commands() -> list[Command]:
    found = readme_commands() + help_examples() + readme_commands(REPO / "models" / "README.md")
    for script in sorted((REPO / "examples").glob("*.sh")):
        lines = script.read_text().splitlines()
        for n, cmd in block_commands(1, lines):
            if command_word(cmd) in ("prn", "torchrun"):
                found.append(Command(cmd, f"examples/{script.name}:{n}"))
    inline = re.findall(r"`(prn [^`]+)`", README.read_text())
    found += [Command(c, "README.md (inline)") for c in inline if "…" not in c and "..." not in c]
    return [c for c in found if c.kind == "shell"]


def test_documented_commands_parse():
    from typer.testing import CliRunner

    from prn_cli.cli import app

    problems, helped = [], set()
    commands = documented_commands()
    assert len(commands) > 40
    for c in commands:
        tokens = prn_tokens(c.text)
        if "..." in tokens or "…" in tokens:
            problems.append(f"{c.source}: a placeholder '...' cannot be run: {c.text}")
            continue
        click_cmd, path = resolve(tokens)
        if not path and tokens and not tokens[0].startswith("-"):
            problems.append(f"{c.source}: no command {tokens[0]!r}: {c.text}")
            continue
        if path not in helped:
            result = CliRunner().invoke(app, [*path, "--help"])
            if result.exit_code != 0:
                problems.append(f"prn {' '.join(path)} --help: exit {result.exit_code}")
            helped.add(path)
        unknown = sorted(set(flags_of(tokens[len(path):])) - option_names(click_cmd))
        if unknown:
            problems.append(f"{c.source}: prn {' '.join(path)} has no option {', '.join(unknown)}: {c.text}")
    assert not problems, "\n".join(problems)


def test_every_command_has_a_help_example():
    from prn_cli.cli import app

    documented = {c.source.removeprefix("prn ").removesuffix(" --help") for c in help_examples()}
    commands = {" ".join(path) for path, _ in _walk(app)}
    assert commands <= documented, sorted(commands - documented)
