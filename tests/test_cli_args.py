"""Every argument of every command, good or bad: an answer or a one-line error, never a
traceback (issue 19). A property-based test over each command's own parser found what
hand-picked cases missed (``record out.txt``, ``--start 1e400``, ``--timeout inf``...).

Commands run in this process against the fixture server (the connection options are
appended, so they win); outputs go to a temporary directory.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from software.cli import registry as registry_command
from software.cli.main import build_parser, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Values that broke commands before, and their neighbours.
NASTY = ["-1", "0", "-0", "1", "12", "1.5", "1e400", "-1e400", "1e308", "nan", "inf",
         "-inf", "99999999999999999999", "0x10", "1h", "5min", "1500ms", "-3s", "00:00:01",
         "25:61", "2024-13-01T00:00:00", "9999-12-31T23:59:59", "0001-01-01T00:00:00",
         "host:notaport", "host:0", ":", "", " ", "x" * 200, "../x", "a,b,,c", "Cz,Cz",
         "Cz,fast1", "index", "main.mefd", "secret.mefd", "mixed.mefd", "nowhere.mefd",
         "--", "-", "é", "\t"]
VALUES = st.one_of(st.sampled_from(NASTY), st.text(max_size=10),
                   st.integers(min_value=-10**20, max_value=10**20).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr))
#: Options that name a file or directory written: always under the test's directory.
OUTPUTS = {"--out", "out", "--frames"}
EXTENSIONS = [".npz", ".csv", ".mefd", ".png", ".svg", ".txt", "", ".mefd/"]
#: Connection options: the fixture server, appended last.
CONNECTION = {"--host", "--port", "--timeout", "--tls-cert", "--tls-key", "--tls-ca"}


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def output_values(tmp: str):
    return st.tuples(st.text("abc", min_size=1, max_size=3),
                     st.sampled_from(EXTENSIONS)).map(lambda t: os.path.join(tmp, "".join(t)))


def arguments(command: str, tmp: str):
    """A strategy of argument lists for ``command``, built from its own parser."""
    sub = subparsers()[command]
    pieces = []
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        names = action.option_strings
        values = output_values(tmp) if (action.dest in OUTPUTS or set(names) & OUTPUTS) \
            else VALUES
        if not names:                                   # a positional: always there
            pieces.append(values.map(lambda v: [v]))
        elif set(names) & CONNECTION:
            continue
        elif action.nargs == 0:                          # a flag
            pieces.append(st.sampled_from([[], [names[-1]]]))
        else:
            pieces.append(st.one_of(st.just([]),
                                    values.map(lambda v, n=names[-1]: [f"{n}={v}"])))
    return st.tuples(*pieces).map(lambda parts: [a for part in parts for a in part])


def run(argv: list[str]) -> tuple[int, str]:
    """``main(argv)`` in this process: exit code and what went to stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:                        # argparse's own usage errors
            code = exc.code if isinstance(exc.code, int) else 2
    return code, err.getvalue()


def check(argv: list[str], code: int, err: str) -> None:
    assert code in (0, 1, 2), (argv, code, err)
    assert "Traceback" not in err and "internal error" not in err, (argv, err)
    if code:
        lines = [line for line in err.splitlines() if line.strip()]
        errors = [line for line in lines if ": error: " in line]
        assert len(errors) == 1, (argv, err)
        if not err.startswith("usage:"):                  # ours: that one line only
            assert lines == errors, (argv, err)


COMMANDS = {"ls": 40, "info": 60, "stats": 5, "export": 60, "plot": 25, "record": 60}


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("cli-args"))


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_any_arguments_give_an_answer_or_one_line_error(server, tmp, command):
    connection = ["--host", "127.0.0.1", "--port", str(server.port), "--timeout", "10"]

    @settings(max_examples=COMMANDS[command], deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(arguments(command, tmp))
    def one(args: list[str]) -> None:
        extra = []
        if command == "plot" and "--follow" in args:     # frames into a directory, 1 only
            extra = ["--frames", os.path.join(tmp, "frames"), "--max-frames", "1"]
        argv = [command, *args, *extra, *connection]
        code, err = run(argv)
        check(argv, code, err)

    one()


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from(["--host", "--port", "--pruning-timeout", "--log-level"])
                .flatmap(lambda o: VALUES.map(lambda v: f"{o}={v}")), max_size=4))
def test_the_registry_command_checks_every_argument(args):
    """``registry`` runs until stopped once its arguments are good: its checks alone."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            problem = registry_command.check(registry_command.build_parser()
                                             .parse_args(args))
        except SystemExit as exc:
            assert exc.code == 2
            return
    assert "Traceback" not in err.getvalue()
    assert problem is None or (problem.count("\n") == 0 and problem.startswith("--"))


@pytest.mark.parametrize("args, argument", [
    (["record", "out.txt"], "OUT.mefd"),
    (["record", "x.mefd", "--seconds", "-1"], "--seconds"),
    (["record", "x.mefd", "--seconds", "inf"], "--seconds"),
    (["record", "x.mefd", "--precision", "12"], "--precision"),
    (["record", "x.mefd", "--flush-seconds", "nan"], "--flush-seconds"),
    (["ls", "--registry", "host:notaport"], "--registry"),
    (["info", "main.mefd", "--timeout", "inf"], "--timeout"),
    (["info", "main.mefd", "--timeout", "nan"], "--timeout"),
    (["info", "main.mefd", "--port", "70000"], "--port"),
    (["info", "main.mefd", "--host", "", "--timeout", "1"], "--host"),
    (["info", "main.mefd", "--host", "x" * 300, "--timeout", "1"], "--host"),
    (["export", "main.mefd", "--start", "1e400", "--out", "{tmp}/a.npz"], "--start"),
    (["export", "main.mefd", "--stop", "99999999999999999999", "--out", "{tmp}/a.npz"],
     "--stop"),
    (["export", "main.mefd", "--segment-seconds", "1e400", "--out", "{tmp}/a.npz"],
     "--segment-seconds"),
    (["plot", "main.mefd", "--seconds", "1e400", "--out", "{tmp}/a.png"], "--seconds"),
    (["plot", "main.mefd", "--spacing", "inf", "--out", "{tmp}/a.png"], "--spacing"),
])
def test_the_bad_arguments_that_ended_in_a_traceback(server, tmp, args, argument):
    argv = [a.format(tmp=tmp) for a in args] + ["--port", str(server.port)]
    if "--port" in args:
        argv = [a.format(tmp=tmp) for a in args]
    code, err = run(argv)
    assert code == 2, (argv, err)
    assert f"error: {argument}: " in err and err.count("\n") == 1, err
    assert "Traceback" not in err


@pytest.mark.parametrize("reader", ["head -2", "true"])
def test_stats_into_a_closed_pipe_ends_quietly(server, reader):
    """``stats | head -2``: the reader closes the pipe early (``true`` at once, before
    anything is written); no "Broken pipe" message, exit status 0."""
    shell = f"{sys.executable} -m software stats --port {server.port} | {reader}"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", shell], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert len(done.stdout.splitlines()) == (2 if reader.startswith("head") else 0)
    assert done.stderr == "" and done.returncode == 0, done.stderr
