"""Server options checked once (issue 9, fault 3): MefStreamServer refuses a bad value before
it spawns anything, and start.py exits 2 naming the flag, the value and the valid range."""
from __future__ import annotations

import math
import os
import subprocess
import sys

import psutil
import pytest

from software import InvalidArgumentError, InvalidTypeError, MefStreamServer
from software.server.options import RANGES, ServerOptions, check_option

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: (argument, bad value, text the message must hold)
BAD = [
    ("block_seconds", 0, ">= 0.1"), ("block_seconds", -10.0, ">= 0.1"),
    ("block_seconds", 0.001, "cache keys"), ("segment_seconds", 0, "> 0"),
    ("segment_seconds", -1.0, "> 0"), ("max_request_mb", 0, "> 0"),
    ("max_request_mb", 5000, "<= 4000"), ("prefetch", -1, ">= 0"), ("workers", 0, ">= 1"),
    ("cache_mb", -1, ">= 0"), ("callback_timeout", 0, "> 0"), ("read_timeout", -1, "> 0"),
    ("port", 65536, "<= 65535"), ("port", -1, ">= 0"), ("reader_nice", -5, ">= 0"),
    ("segment_seconds", math.nan, "invalid"), ("cache_mb", math.inf, "invalid"),
]


def children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


@pytest.mark.parametrize("name, value, text", BAD)
def test_server_refuses_a_bad_option_before_spawning_anything(data_root, name, value, text):
    before = children()
    with pytest.raises(InvalidArgumentError) as info:
        MefStreamServer(**{"port": 0, "data_root": data_root, "workers": 1, name: value})
    message = str(info.value)
    assert message.startswith(f"{name}=") and text in message, message
    assert RANGES[name].describe() in message           # the valid range, from the table
    assert children() == before                          # no reader process was started


def test_block_seconds_zero_is_refused_not_a_zero_division(data_root):
    """Was: the server started, and every open_file failed with ZeroDivisionError."""
    with pytest.raises(InvalidArgumentError, match=r"block_seconds=0 is out of range"):
        MefStreamServer(port=0, data_root=data_root, workers=1, block_seconds=0)


@pytest.mark.parametrize("name, value", [("workers", 1.5), ("port", "80"), ("prefetch", None),
                                         ("cache_mb", "1024"), ("workers", True)])
def test_wrong_types_are_refused(name, value):
    with pytest.raises(InvalidTypeError, match=f"^{name}="):
        ServerOptions(**{name: value})


def test_good_values_are_converted_once():
    opts = ServerOptions(workers=3, cache_mb=64, block_seconds=1, max_request_mb=1,
                         data_root=".")
    assert (opts.workers, opts.cache_mb, opts.block_seconds) == (3, 64.0, 1.0)
    assert type(opts.cache_mb) is float and type(opts.workers) is int
    assert opts.max_request_bytes == 2**20 and opts.max_frame == 2 * 2**20
    assert opts.data_root == os.path.realpath(".")
    service = opts.service_options()
    assert service.max_request_bytes == 2**20 and service.prefetch == 1
    with pytest.raises(AttributeError):
        opts.workers = 0                                 # frozen: checked once, for good


def test_check_option_names_the_flag_when_given_one():
    with pytest.raises(InvalidArgumentError) as info:
        check_option("block_seconds", 0.0, flag="--block-seconds")
    assert str(info.value).startswith("--block-seconds 0.0 is out of range")
    assert "--block-seconds 10.0" in str(info.value)    # the fix, in the flag's own form


@pytest.mark.parametrize("flag, value, text", [
    ("--block-seconds", "0", ">= 0.1"), ("--segment-seconds", "0", "> 0"),
    ("--max-request-mb", "0", "> 0"), ("--prefetch", "-1", ">= 0"),
    ("--workers", "0", ">= 1"), ("--port", "70000", "<= 65535"),
    ("--callback-timeout", "0", "> 0"), ("--block-seconds", "nan", "invalid"),
])
def test_start_exits_2_naming_the_flag_the_value_and_the_range(tmp_path, flag, value, text):
    """start.py must refuse before writing the demo or listening (it must not start)."""
    args = [sys.executable, "start.py", "--data-root", str(tmp_path / "data"), flag, value]
    if flag != "--port":
        args += ["--port", "0"]
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"start.py: error: {flag} "), last
    assert text in last and ("out of range" in last or "invalid" in last), last
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()               # refused before anything ran
