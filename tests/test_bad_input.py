"""Bad input is refused with a mefstream error that names the argument (issue 3).

Every exposed method gets wrong types, NaN, infinities, negative, huge and non-integer
values (hypothesis); each call must raise the right :class:`software.StreamError` subclass,
rebuilt on the client, and leave the view unchanged and the server healthy. Then the paths
(``..``, absolute, symlinks, non-sessions, truncated sessions), passwords, channel names,
mixed rates and gaps, against real MEF3 files and real reader processes.
"""
from __future__ import annotations

import math
import os
import shutil
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import software
from software import MefStreamServer, decode_segment, get_connection
from software.validation import MAX_INDEX, MAX_PASSWORD_BYTES
from tests.conftest import GAP, PASSWORD1, PASSWORD2, SEGMENT2_UUTC
from tests.util import FS, START, reference, wait_until

#: Hypothesis budget per property: enough to hit every branch, small enough for CI.
FUZZ = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])

MAIN_CHANNELS = ("Cz", "Fp1", "Fp2", "O1", "O2", "index")


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-exact equality, NaN included."""
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def message(exc: BaseException) -> str:
    """The error's own message, without the remote traceback RPyC appends to str()."""
    return str(exc.args[0]) if exc.args else ""


# ---- fixtures ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def main_ref(main_path):
    return reference(main_path, MAIN_CHANNELS)


@pytest.fixture(scope="module")
def client(server):
    """One connection for the whole module, with main.mefd open (hypothesis reuses it)."""
    conn = get_connection(server.port, host="127.0.0.1", timeout=10)
    svc = conn.root.open_file("main.mefd")
    yield conn, svc
    conn.close()


@pytest.fixture
def svc(client):
    """The module's view of main.mefd, checked healthy and unchanged after the test."""
    conn, view = client
    yield view
    info = dict(view.get_info())
    assert info["channels"] == MAIN_CHANNELS and info["segment_seconds"] == 7.0


def healthy(svc, ref: np.ndarray) -> None:
    """A good call right after a bad one returns the right samples."""
    assert same(decode_segment(svc.get_stream_segment(16, 1000)), ref[:, 1000:1016])


# ---- classification of values: what each argument must raise -------------------------

def index_error(value, minimum: int = 0):
    """The error ``as_index`` must raise for ``value``, or None when it is a valid index."""
    if value is None or isinstance(value, bool) or not isinstance(value, int):
        return software.InvalidTypeError
    if value < minimum or value > MAX_INDEX:
        return software.InvalidRangeError
    return None


def uutc_error(value):
    if isinstance(value, float):
        if not math.isfinite(value):
            return software.InvalidArgumentError
        if not value.is_integer():
            return software.InvalidTypeError
        value = int(value)
    return index_error(value, -MAX_INDEX)


def seconds_error(value, n_channels: int = 6, limit: int = 256 * 2**20):
    if value is None or isinstance(value, (bool, str, bytes, list, tuple)):
        return software.InvalidTypeError
    try:
        number = float(value)
    except OverflowError:
        return software.InvalidRangeError
    if not math.isfinite(number) or number <= 0:
        return software.InvalidArgumentError
    if number > 1e9 or max(1, int(round(number * FS))) * n_channels * 8 > limit:
        return software.InvalidRangeError
    return None


def names_error(value):
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if isinstance(value, (bytes, int, float)):
        return software.InvalidTypeError
    if any(not isinstance(v, str) for v in value):
        return software.InvalidTypeError
    if any(v not in MAIN_CHANNELS for v in value):
        return software.UnknownChannelError
    if len(set(value)) != len(value):
        return software.InvalidArgumentError
    return None


NOT_INTEGERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.none(), st.booleans(),
    st.text(max_size=8), st.binary(max_size=8), st.lists(st.integers(0, 9), max_size=3),
    st.tuples(st.integers()), st.complex_numbers(max_magnitude=1e3))
BAD_INTEGERS = st.one_of(st.integers(max_value=-1), st.integers(MAX_INDEX + 1, 2**200))
BAD_INDICES = st.one_of(NOT_INTEGERS, BAD_INTEGERS)

#: (argument name, call with the bad value in that argument's place, minimum)
INDEX_ARGS = {
    "get_stream_segment._range": ("_range", lambda s, v: s.get_stream_segment(v, 0), 1),
    "get_stream_segment._startIndex": ("_startIndex",
                                       lambda s, v: s.get_stream_segment(8, v), 0),
    "get_row_segment._range": ("_range", lambda s, v: s.get_row_segment(0, v, 0), 1),
    "get_row_segment._startIndex": ("_startIndex", lambda s, v: s.get_row_segment(0, 8, v), 0),
    "get_segment.index": ("index", lambda s, v: s.get_segment(v), 0),
    "get_stream_segment._range(callback)": (
        "_range", lambda s, v: s.get_stream_segment(v, 0, lambda _value: None), 1),
}


def check_refused(call, expected, name: str, value) -> BaseException:
    with pytest.raises(software.StreamError) as caught:
        call()
    exc = caught.value
    assert isinstance(exc, expected), (value, type(exc).__mro__, message(exc))
    assert name in message(exc), (value, message(exc))
    return exc


# ---- integer arguments ---------------------------------------------------------------

@pytest.mark.parametrize("where", sorted(INDEX_ARGS))
@FUZZ
@given(value=BAD_INDICES)
def test_bad_index_arguments_are_refused(svc, main_ref, where, value):
    name, call, minimum = INDEX_ARGS[where]
    expected = index_error(value, minimum)
    if expected is None:
        return  # a valid index: not this test's business
    check_refused(lambda: call(svc, value), expected, name, value)
    healthy(svc, main_ref)


@FUZZ
@given(value=st.one_of(BAD_INDICES, st.text(max_size=8), st.integers(6, 10**6)))
def test_bad_rows_are_refused(svc, main_ref, value):
    if isinstance(value, str):
        expected = None if value in MAIN_CHANNELS else software.UnknownChannelError
    elif isinstance(value, int) and not isinstance(value, bool) and 6 <= value <= MAX_INDEX:
        expected = software.UnknownChannelError    # a row past the active channels
    else:
        expected = index_error(value)
    if expected is None:
        return
    check_refused(lambda: svc.get_row_segment(value, 8, 0), expected, "_row", value)
    healthy(svc, main_ref)


@FUZZ
@given(index=st.integers(min_value=0, max_value=MAX_INDEX))
def test_segment_index_past_the_end(svc, main_ref, index):
    n_segments = dict(svc.get_info())["n_segments"]
    if index < n_segments:
        return
    exc = check_refused(lambda: svc.get_segment(index), software.InvalidRangeError, "index",
                        index)
    assert f"0..{n_segments - 1}" in message(exc)      # names the valid range: the fix
    healthy(svc, main_ref)


@FUZZ
@given(value=st.one_of(NOT_INTEGERS, st.integers(min_value=-2**200, max_value=2**200)),
       which=st.sampled_from(["start_uutc", "stop_uutc"]))
def test_bad_time_stamps_are_refused(svc, main_ref, value, which):
    expected = uutc_error(value)
    if expected is None:
        return
    if which == "start_uutc":
        call = lambda: svc.get_time_segment(value, START + 10**6)       # noqa: E731
    else:
        call = lambda: svc.get_time_segment(START, value)               # noqa: E731
    check_refused(call, expected, which, value)
    healthy(svc, main_ref)


@FUZZ
@given(t0=st.integers(-MAX_INDEX, MAX_INDEX), span=st.integers(-10**7, 10**7))
def test_any_integer_window_gives_data_false_or_a_range_error(svc, main_ref, t0, span):
    """No pair of integers makes the server fail with anything but an InvalidRangeError."""
    t1 = max(-MAX_INDEX, min(MAX_INDEX, t0 + span))
    try:
        value = svc.get_time_segment(t0, t1)
    except software.InvalidRangeError as exc:
        assert t1 <= t0 and "stop_uutc" in message(exc)
    else:
        data = decode_segment(value)
        assert data is False or (data.shape[0] == 6 and data.dtype == np.float64)
    healthy(svc, main_ref)


# ---- other arguments -----------------------------------------------------------------

@FUZZ
@given(value=st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.none(), st.booleans(),
    st.text(max_size=8), st.binary(max_size=4), st.lists(st.floats(), max_size=2),
    st.integers(max_value=0), st.integers(min_value=22_000, max_value=10**400),
    st.just("1.5"), st.just(float("nan")), st.just(1e308)))
def test_bad_segment_sizes_are_refused(svc, main_ref, value):
    expected = seconds_error(value)
    if expected is None:
        return
    with pytest.raises(software.StreamError) as caught:
        svc.set_segment_size(value)
    exc = caught.value
    assert isinstance(exc, expected), (value, message(exc))
    # the size check names the limit; every other check names the argument
    assert "seconds" in message(exc) or "per-request limit" in message(exc)
    healthy(svc, main_ref)              # and the fixture checks segment_seconds is still 7


@FUZZ
@given(value=st.one_of(
    st.integers(), st.floats(), st.booleans(), st.binary(min_size=1, max_size=4),
    st.text(max_size=4),
    st.lists(st.one_of(st.integers(), st.none(), st.floats(), st.binary(max_size=2)),
             min_size=1, max_size=3),
    st.lists(st.sampled_from(MAIN_CHANNELS + ("Pz", "cz", "", "index ")), min_size=1,
             max_size=5)))
def test_bad_channel_selections_are_refused(svc, main_ref, value):
    expected = names_error(value)
    if expected is None:
        svc.set_active_channels(value)
        svc.set_active_channels(None)       # back to the default for the next example
        return
    check_refused(lambda: svc.set_active_channels(value), expected, "names", value)
    healthy(svc, main_ref)              # the selection did not change


@FUZZ
@given(path=st.one_of(st.none(), st.integers(), st.floats(), st.booleans(),
                      st.binary(max_size=8), st.lists(st.text(max_size=3), max_size=2),
                      st.text(max_size=12)))
def test_bad_paths_are_refused(client, data_root, main_ref, path):
    conn, svc = client
    if isinstance(path, str):
        real = os.path.realpath(os.path.join(data_root, path)) if "\0" not in path else ""
        if os.path.basename(real) in ("main.mefd", "mixed.mefd"):
            return
        expected, name = software.SessionError, None   # missing, outside, not a session...
    else:
        expected, name = software.InvalidTypeError, "path"
    with pytest.raises(expected) as caught:
        conn.root.open_file(path)
    if name:
        assert name in message(caught.value)
    assert conn.root.list_open_files() == ("main.mefd",)
    healthy(svc, main_ref)


@FUZZ
@given(password=st.one_of(
    st.integers(), st.floats(), st.booleans(), st.binary(min_size=1, max_size=20),
    st.lists(st.text(max_size=3), max_size=2),
    st.text(min_size=MAX_PASSWORD_BYTES + 1, max_size=64),
    st.text(min_size=1, max_size=4).map(lambda t: PASSWORD2 + "\0" + t)),
    path=st.sampled_from(["main.mefd", "secret.mefd"]))
def test_bad_passwords_are_refused_before_pymef(client, server, main_ref, password, path):
    """Passwords pymef cannot take (it strcpy's them into 16 bytes) never reach a reader."""
    conn, svc = client
    restarts = server.pool.restarts
    if isinstance(password, str):
        expected = software.WrongPasswordError
    else:
        expected = software.InvalidTypeError
    with pytest.raises(expected) as caught:
        conn.root.open_file(path, password)
    text = message(caught.value)
    assert "password" in text
    if isinstance(password, str):
        assert password not in text
    assert server.pool.restarts == restarts            # no reader process crashed
    assert conn.root.list_open_files() == ("main.mefd",)
    healthy(svc, main_ref)


def test_password_truncated_at_nul_does_not_open_the_session(conn):
    """pymef would read "<right password>\\0junk" as the right password; we refuse it."""
    with pytest.raises(software.WrongPasswordError):
        conn.root.open_file("secret.mefd", PASSWORD2 + "\0junk")
    assert conn.root.list_open_files() == ()


def test_non_callable_callback_is_refused(svc, main_ref):
    with pytest.raises(software.InvalidTypeError, match="_callback"):
        svc.get_stream_segment(100, 30_000, "not a function")
    healthy(svc, main_ref)


# ---- requests too large ---------------------------------------------------------------

@pytest.mark.parametrize("call", [
    lambda s: s.get_stream_segment(10**12, 0),
    lambda s: s.get_stream_segment(10**12, 0, lambda _value: None),
    lambda s: s.get_row_segment(0, 10**12, 0),
    lambda s: s.get_row_segment("index", 10**12, 40_000),
    lambda s: s.get_time_segment(START, START + 10**15),
    lambda s: s.set_segment_size(10**6),
], ids=["stream", "stream+callback", "row", "row-by-name-near-end", "time", "segment-size"])
def test_too_large_requests_are_refused_at_once(svc, server, main_ref, call):
    """To plain clients (``svc.proxy``); a RemoteStream asks again in pieces (test_pieces)."""
    before = dict(server.cache.stats())
    started = time.monotonic()
    with pytest.raises(software.InvalidRangeError) as caught:
        call(svc.proxy)
    assert time.monotonic() - started < 2.0        # refused, not attempted
    text = message(caught.value)
    assert "per-request limit of 256 MiB" in text and "at most" in text   # limit and fix
    after = dict(server.cache.stats())
    assert (after["hits"], after["misses"]) == (before["hits"], before["misses"])  # no read
    healthy(svc, main_ref)


def test_the_limit_applies_to_what_is_asked_not_to_what_is_left(svc, main_ref):
    """A huge _range near the end is refused too: the same call never works on a short file
    and fails on a long one. Ranges within the limit still return what is left."""
    n = main_ref.shape[1]
    plain = svc.proxy     # a RemoteStream asks again in pieces (test_pieces)
    assert same(decode_segment(plain.get_stream_segment(5_000_000, n - 10)), main_ref[:, -10:])
    with pytest.raises(software.InvalidRangeError):
        plain.get_stream_segment(6_000_000, n - 10)
    assert same(svc.get_stream_segment(6_000_000, n - 10), main_ref[:, -10:])


# ---- paths -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def odd_root(tmp_path_factory, data_root):
    """A data root with symlinks, truncated copies and things that are not sessions.

    Next to ``root`` lie ``outside`` and ``root-private`` (a sibling whose name starts
    with the root's: a check by string prefix would take it for inside).
    """
    base = tmp_path_factory.mktemp("paths")
    root, outside, private = base / "root", base / "outside", base / "root-private"
    root.mkdir()
    outside.mkdir()
    private.mkdir()
    main = os.path.join(data_root, "main.mefd")
    shutil.copytree(main, outside / "elsewhere.mefd")
    shutil.copytree(main, private / "private.mefd")
    shutil.copytree(main, root / "good.mefd")
    os.symlink(outside / "elsewhere.mefd", root / "escape.mefd")   # points out of the root
    os.symlink(outside, root / "up")                                # a directory link out
    os.symlink(private / "private.mefd", root / "sibling.mefd")    # out, to root-private
    os.symlink(root / "good.mefd", root / "alias.mefd")             # stays inside: allowed
    # session directories under the root whose files (or a channel) link elsewhere
    for name, target in (("files_out", outside / "elsewhere.mefd"),
                         ("files_private", private / "private.mefd"),
                         ("files_inside", root / "good.mefd")):       # the last is allowed
        link_files(target, root / f"{name}.mefd")
    (root / "channel_out.mefd").mkdir()
    for entry in os.listdir(main):
        os.symlink(private / "private.mefd" / entry, root / "channel_out.mefd" / entry)
    for name, ext in (("cut_tdat", ".tdat"), ("cut_tidx", ".tidx")):
        shutil.copytree(main, root / f"{name}.mefd")
        target = root / f"{name}.mefd" / "Fp1.timd" / "Fp1-000000.segd" / f"Fp1-000000{ext}"
        size = os.path.getsize(target)
        with open(target, "r+b") as fh:
            fh.truncate(size // 2)
    # only the header left: pymef silently drops the segment and shifts the channel's data
    shutil.copytree(main, root / "header_only.mefd")
    os.truncate(root / "header_only.mefd" / "O1.timd" / "O1-000001.segd" / "O1-000001.tdat",
                1024)
    (root / "plain_dir").mkdir()
    (root / "empty.mefd").mkdir()
    (root / "file.mefd").write_bytes(b"not a directory")
    return str(root), str(outside)


def link_files(source, dest) -> None:
    """Make ``dest`` a tree of real directories whose every file links into ``source``."""
    for here, _dirs, files in os.walk(source):
        target = os.path.join(dest, os.path.relpath(here, source))
        os.makedirs(target, exist_ok=True)
        for name in files:
            os.symlink(os.path.join(here, name), os.path.join(target, name))


@pytest.fixture(scope="module")
def odd_server(odd_root):
    root, _ = odd_root
    with MefStreamServer(port=0, data_root=root, workers=1, cache_mb=16) as srv:
        yield srv


@pytest.fixture
def odd_conn(odd_server):
    conn = get_connection(odd_server.port, host="127.0.0.1", timeout=10)
    yield conn
    conn.close()


PATH_CASES = [
    ("..", software.OutsideDataRootError),
    ("../outside/elsewhere.mefd", software.OutsideDataRootError),
    ("good.mefd/../../outside/elsewhere.mefd", software.OutsideDataRootError),
    ("/etc", software.OutsideDataRootError),
    ("{outside}/elsewhere.mefd", software.OutsideDataRootError),   # a real session, outside
    ("escape.mefd", software.OutsideDataRootError),
    ("up/elsewhere.mefd", software.OutsideDataRootError),
    ("sibling.mefd", software.OutsideDataRootError),
    ("../root-private/private.mefd", software.OutsideDataRootError),
    ("{private}/private.mefd", software.OutsideDataRootError),
    ("files_out.mefd", software.OutsideDataRootError),
    ("files_private.mefd", software.OutsideDataRootError),
    ("channel_out.mefd", software.OutsideDataRootError),
    ("missing.mefd", software.NotMefSessionError),
    ("plain_dir", software.NotMefSessionError),
    ("empty.mefd", software.NotMefSessionError),
    ("file.mefd", software.NotMefSessionError),
    ("good.mefd/Fp1.timd", software.NotMefSessionError),
    ("good.mefd/Fp1.timd/Fp1-000000.segd/Fp1-000000.tdat", software.NotMefSessionError),
    ("", software.NotMefSessionError),
    ("good.mefd\0", software.NotMefSessionError),
    ("cut_tdat.mefd", software.CorruptSessionError),
    ("cut_tidx.mefd", software.CorruptSessionError),
    ("header_only.mefd", software.CorruptSessionError),
]


@pytest.mark.parametrize("path, error", PATH_CASES, ids=[p for p, _ in PATH_CASES])
def test_paths_are_confined_and_checked(odd_conn, odd_server, odd_root, path, error):
    root, outside = odd_root
    private = os.path.join(os.path.dirname(root), "root-private")
    path = path.format(outside=outside, private=private)
    with pytest.raises(error) as caught:
        odd_conn.root.open_file(path)
    text = message(caught.value)
    if path and "\0" not in path:
        assert path.split("/")[0] in text                # names the path as it was given
    if error is software.OutsideDataRootError:
        assert "data root" in text
        for elsewhere in (outside, private):             # no peek at link targets
            assert elsewhere not in text or path.startswith(elsewhere)
    assert root not in text.replace(path, "")            # nor at the server's layout
    assert odd_server.pool.restarts == 0                 # no reader crashed on the way
    assert odd_conn.root.list_open_files() == ()
    svc = odd_conn.root.open_file("good.mefd")
    assert decode_segment(svc.get_stream_segment(4, 0)).shape == (6, 4)


def test_symlink_inside_the_root_and_absolute_path_inside_are_allowed(odd_conn, odd_root,
                                                                       main_ref):
    root, _ = odd_root
    for path in ("alias.mefd", os.path.join(root, "good.mefd"), "./good.mefd",
                 "files_inside.mefd"):
        svc = odd_conn.root.open_file(path)
        assert same(decode_segment(svc.get_stream_segment(3000, 30_000)),
                    main_ref[:, 30_000:33_000])


# ---- passwords, channels, rates, gaps --------------------------------------------------

@pytest.mark.parametrize("password, hint", [
    (None, "level-2"), ("wrong", "level-2"), (PASSWORD1, "level-1"),
    ("x" * 40, "15 UTF-8 bytes"), ("é" * 8, "15 UTF-8 bytes")])
def test_wrong_missing_and_level1_passwords(conn, server, data_root, password, hint):
    # closed by every earlier user, so the password goes to the reader's check
    wait_until(lambda: "secret.mefd" not in server.registry.open_paths())
    restarts = server.pool.restarts
    with pytest.raises(software.WrongPasswordError) as caught:
        conn.root.open_file("secret.mefd", password)
    assert hint in message(caught.value)
    assert server.pool.restarts == restarts                 # level 1 would crash pymef
    svc = conn.root.open_file("secret.mefd", PASSWORD2)      # and the right one still works
    want = reference(os.path.join(data_root, "secret.mefd"), ["a"], password=PASSWORD2)
    assert same(decode_segment(svc.get_stream_segment(2560, 0)), want[:, :2560])


def test_unknown_duplicate_and_mixed_rate_channels(conn):
    svc = conn.root.open_file("mixed.mefd")
    with pytest.raises(software.UnknownChannelError) as caught:
        svc.set_active_channels(["slow1", "Pz"])
    assert "Pz" in message(caught.value) and "slow1" in message(caught.value)  # the choice
    with pytest.raises(software.InvalidArgumentError, match="more than once"):
        svc.set_active_channels(["slow1", "slow1"])
    with pytest.raises(software.MixedRateError) as caught:
        svc.set_active_channels(["slow1", "fast2"])
    assert "256 Hz" in message(caught.value) and "512 Hz" in message(caught.value)
    with pytest.raises(software.UnknownChannelError, match="not an active channel"):
        svc.get_row_segment("slow1", 10, 0)        # the view is on the 512 Hz channels
    assert dict(svc.get_info())["channels"] == ("fast1", "fast2")   # unchanged
    assert decode_segment(svc.get_stream_segment(512, 0)).shape == (2, 512)


def test_windows_without_data_are_nan_not_errors(svc, main_ref):
    assert np.isnan(main_ref[:, GAP[0]:GAP[1]]).all()     # the fixture's gap
    inside = decode_segment(svc.get_stream_segment(GAP[1] - GAP[0] - 20, GAP[0] + 10))
    assert inside.shape == (6, GAP[1] - GAP[0] - 20) and np.isnan(inside).all()
    across = decode_segment(svc.get_stream_segment(4000, GAP[0] - 2000))
    assert same(across, main_ref[:, GAP[0] - 2000:GAP[0] + 2000])
    # the 5 s pause before the second MEF segment, asked for by time
    pause = decode_segment(svc.get_time_segment(SEGMENT2_UUTC - 4_000_000,
                                                SEGMENT2_UUTC - 1_000_000))
    assert pause.shape == (6, 3 * 256) and np.isnan(pause).all()
    # a window that starts before the recording: NaN first, then the data
    early = decode_segment(svc.get_time_segment(START - 1_000_000, START + 1_000_000))
    assert np.isnan(early[:, :256]).all() and same(early[:, 256:], main_ref[:, :256])
    # entirely outside the recording: False, not an error
    assert svc.get_time_segment(START - 10**7, START - 10**6) is False
    assert svc.get_stream_segment(10, main_ref.shape[1]) is False
