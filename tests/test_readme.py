"""The README's code blocks, run as a reader would: its servers (start.py as the set-up
starts it, a single session, a live stream, a replay, a server in a program) on free
ports, and every script and command against them (see tests/readme_blocks.py)."""
from __future__ import annotations

import os
import re
import shlex
import signal
import sys

import pytest

from software import get_connection
from tests.readme_blocks import (
    DEFAULT_PORT,
    ROOT,
    Block,
    SHIM,
    Runner,
    blocks,
    console_steps,
    same_output,
    stop,
)
from tests.util import wait_until

README = os.path.join(ROOT, "README.md")


def _quickstart(out: str, err: str, cwd: str) -> None:
    lines = out.splitlines()
    assert lines[0] == "('EEG01', 'EEG02', 'EEG03') 256.0 460800"
    assert len(lines) == 1 + 460800 // 2560                 # 10 s chunks, 30 min
    assert all(line.startswith("(16, 2560) ") for line in lines[1:])
    assert lines[1 + 60] == "(16, 2560) nan"                # 600 s: the demo's gap


def _crepe(out: str, err: str, cwd: str) -> None:
    assert out.splitlines() == ["16 100 <class 'float'>", "1000 (16, 100)", "(16, 2560)"]


def _follower(out: str, err: str, cwd: str) -> None:
    """20 chunks in order, each holding exactly the samples its position says."""
    found = re.findall(r"^up to sample (\d+): t = ([\d.]+) to ([\d.]+) s$", out, re.M)
    assert len(found) == 20, out
    positions = [int(p) for p, _, _ in found]
    assert positions == list(range(positions[0], positions[0] + 2000, 100))
    for position, first, last in found:
        assert first == f"{(int(position) - 100) / 1000:.3f}"
        assert last == f"{(int(position) - 1) / 1000:.3f}"


def _record(out: str, err: str, cwd: str) -> None:
    assert re.search(r"^recorded \d+ samples x 3 channels to \S*rig_run1.mefd$", err, re.M), err
    assert os.path.isdir(os.path.join(cwd, "rig_run1.mefd"))


def _closed_loop(out: str, err: str, cwd: str) -> None:
    assert out.startswith("following demo.mefd (a replay of the recording at 10x real time): "
                          "16 channels at 256 Hz; watching EEG01\n"), out
    assert re.search(r"^analysed \d+ s of EEG01", out, re.M), out


def _callback(out: str, err: str, cwd: str) -> None:
    assert out in ("callback: (16, 2560)\n", "cached: (16, 2560)\n"), out


def _in_process(out: str, err: str, cwd: str) -> None:
    lines = out.splitlines()
    assert lines[:2] == ["('rig',)", "300"] and lines[2] == "[[  0   1   2   3   4]", out


def _replay_controls(out: str, err: str, cwd: str) -> None:
    lines = out.splitlines()
    assert lines[0] == "10.0 False False", out
    assert len(re.findall(r"\((\d+), (\d+)\)", lines[1])) == 2, out


def _recorder(out: str, err: str, cwd: str) -> None:
    n, error = out.split()
    assert int(n) > 0 and error == "None", out


def _handle(out: str, err: str, cwd: str) -> None:
    """The producer handle pushed 100 blocks into the ring itself (same host)."""
    assert re.fullmatch(r"through shared memory: True head: \d+\n", out), out
    assert int(out.split()[-1]) >= 1000, out


def _torch(out: str, err: str, cwd: str) -> None:
    assert out.splitlines() == [f"{k} (16, 16, 1024)" for k in range(4)], out


#: What the output of a named block must show, beyond exit status 0.
CHECKS = {"quickstart": _quickstart, "crepe": _crepe, "follower": _follower,
          "record": _record, "closed_loop": _closed_loop, "callback": _callback,
          "in_process": _in_process, "replay_controls": _replay_controls,
          "recorder": _recorder, "torch": _torch, "handle": _handle,
          "mne": lambda out, err, cwd: "BAD_ACQ_SKIP" in out or pytest.fail(out),
          "dask": lambda out, err, cwd: out == "(16,)\n" or pytest.fail(out),
          "discovery": lambda out, err, cwd: "\nTrue\n" in out or pytest.fail(out)}


#: A log record's first line (``logging.basicConfig``'s and dask's format).
_RECORD = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ - (\S+) - ", re.M)


def _ours(err: str) -> str:
    """``err`` without the records dask's own loggers wrote (``distributed.*``: a
    worker's heartbeat can fail with a traceback while its cluster shuts down)."""
    starts = [m.start() for m in _RECORD.finditer(err)] + [len(err)]
    kept = [err[:starts[0]]]
    for begin, end in zip(starts, starts[1:]):
        if not _RECORD.match(err, begin).group(1).startswith("distributed."):
            kept.append(err[begin:end])
    return "".join(kept)


def _check(block: Block, code: int, out: str, err: str, cwd: str) -> None:
    assert code == 0, f"{block} exited {code}:\n{out}\n{err}"
    assert "Traceback" not in _ours(err), f"{block}:\n{err}"
    if block.name in CHECKS:
        CHECKS[block.name](out, err, cwd)


def test_every_runnable_readme_block_is_marked():
    found = blocks(README)
    names = {b.name for b in found}
    assert {"quickstart", "crepe", "producer", "follower", "closed_loop"} <= names
    assert {b.kind for b in found} >= {"setup-install", "setup-tests", "server", "python",
                                       "sh", "console"}


def test_the_readme_servers_do_not_share_a_port():
    """Was: the README's --live and --replay lines used the quick start's port, so they
    failed next to it ("Address already in use")."""
    servers = [b for b in blocks(README) if b.kind in ("setup-install", "server")]
    ports = [int((re.findall(r"\b(18[89]\d\d)\b", s.code) or [DEFAULT_PORT])[0])
             for s in servers]
    assert len(servers) >= 4 and len(set(ports)) == len(ports), ports
    for block in blocks(README):
        if block.kind in ("python", "sh", "console") and block.server != "files":
            assert re.search(r"\b18[89]\d\d\b", block.code), (
                f"{block} uses the default port, but its server is not the set-up's")


def _ci_commands() -> list[str]:
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as fh:
        lines = [line.split("#", 1)[0].strip() for line in fh]
    return [" ".join(w for w in shlex.split(line) if w != "--quiet") for line in lines if line]


def test_the_setup_commands_are_what_ci_runs():
    """.ci/run is the README's set-up in a fresh venv: the same install and test commands
    (CI's machine finds torch's CPU wheel without the --index-url)."""
    ci = _ci_commands()
    found = {b.kind: b for b in blocks(README)}
    install = [p.strip() for p in found["setup-install"].code.strip().split("&&")]
    assert install[-1] == ".venv/bin/python start.py"
    tests = [p.strip() for p in found["setup-tests"].code.strip().split("&&")]
    torch = re.sub(r" --index-url \S+", "", tests[0])
    assert tests[0] != torch and "download.pytorch.org/whl/cpu" in tests[0]
    for command in [*install[:-1], torch, tests[1]]:
        assert command in ci, f"{command!r} is not in .ci/run: {ci}"
    assert tests[1] == ".venv/bin/python -m pytest -q" and ci[-1] == tests[1]


def _server_argv(runner: Runner, block: Block) -> list[str]:
    if block.kind == "setup-install":
        return runner.argv(block.code.strip().split("&&")[-1])
    if "\n" not in block.code.strip() and not block.code.startswith(("from", "import")):
        return runner.argv(block.code.strip())
    return runner.script(block)[:1] + [runner.script(block)[-1]]   # a program: run the file


def _run_client(runner: Runner, block: Block) -> tuple[int, str, str]:
    if block.kind == "python":
        done = runner.run(runner.script(block))
        return done.returncode, done.stdout, done.stderr
    if block.kind == "sh":
        out, err = "", ""
        for argv in runner.commands(block):
            done = runner.run(argv)
            out, err = out + done.stdout, err + done.stderr
            if done.returncode != 0:
                return done.returncode, out, err
        return 0, out, err
    if block.kind == "console":
        for command, expected in console_steps(block.code):
            done = runner.run(runner.argv(command))
            actual = (done.stdout + done.stderr).splitlines()
            failing = any(": error: " in line for line in expected)
            assert (done.returncode != 0) == failing, f"$ {command}: exit {done.returncode}"
            assert same_output([runner.text(e) for e in expected], actual), (
                f"$ {command}\nexpected:\n" + "\n".join(expected) + "\nactual:\n"
                + "\n".join(actual))
        return 0, "", ""
    raise AssertionError(f"{block}: cannot run a {block.kind} block")


def _start_background(runner: Runner, block: Block):
    if block.kind == "python":
        return runner.popen(runner.script(block))
    commands = runner.commands(block)
    assert len(commands) == 1, f"{block}: a background sh block is one command"
    return runner.popen(commands[0])


def _serve_group(runner: Runner, server: Block, members: list[Block]) -> None:
    """Start ``server``, run its blocks (background ones first), stop it cleanly."""
    port = runner.server_port(server)
    proc = runner.popen(_server_argv(runner, server))
    background: list[tuple[Block, object]] = []
    try:
        monitor = get_connection(port, host="127.0.0.1", timeout=90)   # demo written first
        try:
            before = dict(monitor.root.get_stats())["connections"]
            for block in (b for b in members if b.background):
                background.append((block, _start_background(runner, block)))
            if background:   # followers and recorders connected before the producer starts
                wait_until(lambda: dict(monitor.root.get_stats())["connections"]
                           >= before + len(background), timeout=60)
            for block in (b for b in members if not b.background):
                _check(block, *_run_client(runner, block), runner.cwd)
        finally:
            monitor.close()
        for block, process in background:
            out, err = process.communicate(timeout=90)
            _check(block, process.returncode, out, err, runner.cwd)
    finally:
        for _, process in background:
            if process.poll() is None:
                process.kill()
                process.communicate()
        how = signal.SIGINT if server.kind == "server" and server.code.startswith(
            ("from", "import")) else signal.SIGTERM
        code, out, err = stop(proc, how)
    assert code == 0 and "Traceback" not in err, f"{server} stopped with {code}:\n{err}"


def _run_page(path: str, cwd: str) -> None:
    """Run every marked block of a page: each server with its blocks, each program alone."""
    found = [b for b in blocks(path) if b.kind != "setup-tests"]
    runner = Runner(cwd, found)
    done: set[str] = set()
    for block in found:
        if block.kind == "program":
            done_run = runner.run(runner.script(block))
            _check(block, done_run.returncode, done_run.stdout, done_run.stderr, cwd)
        elif block.kind in ("setup-install", "server") and block.server not in done:
            done.add(block.server)
            members = [b for b in found if b.server == block.server and b is not block
                       and b.kind not in ("server", "setup-install")]
            _serve_group(runner, block, members)
    served = {b.server for b in found if b.kind in ("server", "setup-install")}
    orphans = [str(b) for b in found if b.kind in ("python", "sh", "console")
               and b.server not in served]
    assert not orphans, f"blocks naming a server the page does not start: {orphans}"


def test_the_readme_blocks_run_against_real_servers(tmp_path):
    """Every server of the README, then every script, command and console line against
    the server it names. The scratch directory stands for the reader's clone: the set-up's
    start.py writes demo.mefd there, and the other servers serve it."""
    servers = [b for b in blocks(README) if b.kind in ("setup-install", "server")]
    assert servers[0].server == "files"
    _run_page(README, str(tmp_path))
    assert os.path.isdir(tmp_path / "demo.mefd") and os.path.isfile(tmp_path / "window.png")


DOCS = sorted(os.path.join(ROOT, "docs", f) for f in os.listdir(os.path.join(ROOT, "docs"))
              if f.endswith(".md"))


@pytest.mark.parametrize("page", DOCS, ids=os.path.basename)
def test_the_docs_blocks_run(page, tmp_path):
    """The same for each page of docs/ (a page without runnable blocks passes at once)."""
    needs_demo = any(b.kind == "server" and "demo.mefd" in b.code for b in blocks(page)) \
        and not any(b.server == "files" for b in blocks(page) if b.kind == "server")
    if needs_demo:
        from software.mef3.demo import write_demo_recording
        write_demo_recording(str(tmp_path / "demo.mefd"))
    _run_page(page, str(tmp_path))


def _test_references(text: str) -> list[tuple[str, str]]:
    """``tests/test_x.py::name`` references, with ``::name`` continuing the last file."""
    refs, last = [], None
    for match in re.finditer(r"`((?:tests/)?test_\w+\.py)?(?:::(\w+))?`", text):
        path, name = match.groups()
        if path:
            last = os.path.basename(path)
        if name and last:
            refs.append((last, name))
        elif path:
            refs.append((last, ""))
    return refs


def test_every_test_the_docs_name_exists():
    """The guarantee tables cite tests by name: a renamed or removed test breaks this."""
    import ast
    defined = {}
    for name in os.listdir(os.path.join(ROOT, "tests")):
        if name.startswith("test_") and name.endswith(".py"):
            with open(os.path.join(ROOT, "tests", name), encoding="utf-8") as fh:
                tree = ast.parse(fh.read())
            defined[name] = {n.name for n in ast.walk(tree)
                             if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    missing, count = [], 0
    for page in [README, *DOCS]:
        with open(page, encoding="utf-8") as fh:
            for file, name in _test_references(fh.read()):
                count += 1
                if file not in defined or (name and name not in defined[file]):
                    missing.append(f"{os.path.basename(page)}: {file}::{name}")
    assert count > 60 and missing == []


def test_commands_run_with_this_interpreter_and_the_mapped_ports(tmp_path):
    runner = Runner(str(tmp_path), [Block("sh", "x", "--port 18863", 1)])
    default, replay = str(runner.ports[18861]), str(runner.ports[18863])
    assert runner.argv("mefstream ls") == [sys.executable, "-c", SHIM, default, "-m",
                                           "software", "ls"]
    assert runner.argv("python examples/closed_loop.py --port 18863") == [
        sys.executable, "-c", SHIM, default, os.path.join(ROOT, "examples", "closed_loop.py"),
        "--port", replay]
    assert runner.argv("python start.py demo.mefd --port 18863  # a comment") == [
        sys.executable, os.path.join(ROOT, "start.py"), "demo.mefd", "--port", replay]
