"""Run the code blocks of a Markdown page against real servers (for tests/test_readme.py).

A block to run is preceded by a marker line ``<!-- test: KIND [SERVER] [background]
[name=NAME] -->``:

- ``setup-install``: ``... && python start.py``; its last command is the ``files`` server.
- ``setup-tests``: the test command (compared with ``.ci/run``, not run here).
- ``server NAME``: a command (sh) or a program (python) that serves until stopped.
- ``python SERVER``: a script run to its end; ``sh SERVER``: one command per line.
- ``console SERVER``: ``$ command`` lines, each followed by the output it prints.
- ``program``: a self-contained program (it starts what it needs), run to its end.
- ``skip REASON``: not run here; the reason names what runs it instead.

``background`` blocks of a server start before its other blocks and are waited for at
the end. Blocks run in a scratch directory (the "clone" a reader works in) with the
checkout on PYTHONPATH; ``python``, ``mefstream``, ``start.py`` and ``examples/`` are
resolved against this interpreter and checkout, and every port the page names is mapped
to a free one (the default port 18861, which scripts leave out, through
``software.client.connect.DEFAULT_PORT`` and ``MEFSTREAM_RPCPORTS``).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_PORT = 18861
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)
MARKER = re.compile(r"<!-- test: ([^>]*?) -->\n$")
#: Languages of blocks a reader may paste and run: each needs a marker.
RUNNABLE = {"python", "sh", "bash", "console", ""}

#: Runs a script (``PORT PATH``) or a module (``PORT -m NAME ARGS``) with the default
#: port of get_connection set to PORT.
SHIM = ("import os, runpy, sys; import software.client.connect as c; "
        "c.DEFAULT_PORT = int(sys.argv[1]); "
        "module = sys.argv[3] if sys.argv[2] == '-m' else None; "
        "sys.argv = sys.argv[3:] if module else sys.argv[2:]; "
        "module or sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0]))); "
        "runpy.run_module(module, run_name='__main__', alter_sys=True) if module else "
        "runpy.run_path(sys.argv[0], run_name='__main__')")


@dataclasses.dataclass
class Block:
    """One marked code block."""

    kind: str
    server: str | None
    code: str
    line: int
    background: bool = False
    name: str | None = None

    def __str__(self) -> str:
        return f"{self.kind} {self.server or ''} block at line {self.line}"


def blocks(path: str) -> list[Block]:
    """The marked blocks of a page; AssertionError for a runnable block without a marker."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    found = []
    for match in FENCE.finditer(text):
        language, code = match.group(1), match.group(2)
        before = text[:match.start()]
        line = before.count("\n") + 1
        marker = MARKER.search(before[-200:])
        if marker is None:
            assert language not in RUNNABLE, (
                f"{os.path.basename(path)}:{line}: a ```{language} block without a "
                f"'<!-- test: ... -->' marker (say how it is run, or 'skip REASON')")
            continue
        words = marker.group(1).split()
        kind, rest = words[0], words[1:]
        if kind == "skip":
            assert rest, f"{path}:{line}: 'skip' needs a reason"
            continue
        block = Block(kind, None, code, line)
        for word in rest:
            if word == "background":
                block.background = True
            elif word.startswith("name="):
                block.name = word[5:]
            elif block.server is None:
                block.server = word
            else:
                raise AssertionError(f"{path}:{line}: unknown marker word {word!r}")
        if kind == "setup-install":
            block.server = "files"
        if kind in ("server", "python", "sh", "console"):
            assert block.server, f"{path}:{line}: {kind} needs a server name"
        found.append(block)
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Runner:
    """Runs blocks in ``cwd`` with the ports of the page mapped to free ones."""

    def __init__(self, cwd: str, pages: list[Block]) -> None:
        self.cwd = cwd
        named = {int(p) for b in pages for p in re.findall(r"\b(18[89]\d\d)\b", b.code)}
        self.ports = {p: free_port() for p in named | {DEFAULT_PORT}}
        self.env = {**os.environ, "PYTHONPATH": ROOT,
                    "MEFSTREAM_RPCPORTS": json.dumps({"MEF": self.ports[DEFAULT_PORT]})}

    # ---- substitution -------------------------------------------------------------
    def text(self, code: str) -> str:
        """The block's text with the page's ports replaced."""
        return re.sub(r"\b(18[89]\d\d)\b", lambda m: str(self.ports[int(m.group(1))]), code)

    def argv(self, command: str) -> list[str]:
        """One shell command line as argv for this interpreter and checkout: scripts and
        ``mefstream``/``python -m software`` get the default-port shim; ``start.py`` and
        other programs run as they are."""
        words = shlex.split(self.text(command), comments=True)
        if words[:1] == ["mefstream"]:
            words = ["python", "-m", "software", *words[1:]]
        if not words or not (words[0] == "python3" or words[0].endswith("python")):
            return words
        args = [os.path.join(ROOT, w) if w == "start.py" or w.startswith("examples/") else w
                for w in words[1:]]
        shimmed = args[:2] == ["-m", "software"] or (
            args and args[0].endswith(".py") and os.path.basename(args[0]) != "start.py")
        if shimmed:
            return [sys.executable, "-c", SHIM, str(self.ports[DEFAULT_PORT]), *args]
        return [sys.executable, *args]

    def script(self, block: Block) -> list[str]:
        """argv running a python block as a file (with the default-port shim)."""
        path = os.path.join(self.cwd, f"block_{block.name or block.line}.py")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(self.text(block.code))
        return [sys.executable, "-c", SHIM, str(self.ports[DEFAULT_PORT]), path]

    def commands(self, block: Block) -> list[list[str]]:
        """argv of each command of an sh block (``&&`` splits commands too)."""
        out = []
        for line in block.code.splitlines():
            for part in line.split("&&"):
                if part.strip() and not part.strip().startswith("#"):
                    out.append(self.argv(part))
        return out

    # ---- processes ------------------------------------------------------------------
    def popen(self, argv: list[str]) -> subprocess.Popen:
        return subprocess.Popen(argv, cwd=self.cwd, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def run(self, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(argv, cwd=self.cwd, env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def server_port(self, block: Block) -> int:
        """The (mapped) port a server block listens on."""
        ports = re.findall(r"\b(18[89]\d\d)\b", block.code)
        return self.ports[int(ports[0]) if ports else DEFAULT_PORT]


def stop(proc: subprocess.Popen, how: int = signal.SIGTERM, timeout: float = 30):
    """Stop a server the way its reader would (SIGTERM, or Ctrl-C); returns its output."""
    if proc.poll() is None:
        proc.send_signal(how)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, out, err


def console_steps(code: str) -> list[tuple[str, list[str]]]:
    """``$ command`` lines of a console block, each with the output lines after it."""
    steps: list[tuple[str, list[str]]] = []
    for line in code.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            assert steps, f"output before the first '$ ' line: {line!r}"
            steps[-1][1].append(line)
    return steps


def same_output(expected: list[str], actual: list[str]) -> bool:
    """Whether ``actual`` is ``expected``, where a line ``...`` stands for any lines."""
    if not expected:
        return not actual
    if expected[0] == "...":
        return any(same_output(expected[1:], actual[k:]) for k in range(len(actual) + 1))
    return bool(actual) and actual[0] == expected[0] and same_output(expected[1:], actual[1:])
