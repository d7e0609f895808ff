"""Closed loop on a live stream: watch one channel's alpha power and react to its bursts.

Follows a live stream from its head with ``StreamSegmentIterator.next_or_wait``, one
second at a time, and computes the alpha band power (8-12 Hz, in the stream's units
squared) of one channel. The baseline is the median of the first ``--baseline-seconds``;
an alpha burst is ``--hold`` seconds in a row above ``--factor`` times the baseline, and
each burst is a reaction (here a printed line; in an experiment a stimulus), at most one
per ``--refractory`` seconds. A status line every 10 s shows the power as it goes.

By default it starts its own server replaying ``--session`` under ``--data-root`` (the
demo recording, written first when the root holds no session, as ``python start.py``
does). With ``--port`` it follows the stream a running server serves at its root::

    python start.py demo.mefd --replay --speed 10 --port 18863     # one terminal
    python examples/closed_loop.py --port 18863 --seconds 30       # another

If that server goes away, it stops with one line on stderr and exit status 1.
"""
from __future__ import annotations

if __name__ == "__main__" and not __package__:
    from _handoff_demo import reexec_as_module
    reexec_as_module("closed_loop")

import sys
import time

import numpy as np

from examples._handoff_demo import ensure_demo, parser

#: Alpha band, Hz.
ALPHA = (8.0, 12.0)
#: Seconds of signal between two status lines.
STATUS_EVERY = 10


def alpha_power(window: np.ndarray, fs: float) -> np.ndarray:
    """Alpha band power of each row of ``window``: the periodogram (Hann window, mean
    removed) summed over 8-12 Hz, in the signal's units squared (uV^2 for EEG). NaN for a
    row with a NaN (a gap)."""
    x = np.asarray(window, dtype=np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    taper = np.hanning(x.shape[1])
    density = np.abs(np.fft.rfft(x * taper, axis=1)) ** 2 * 2.0 / (fs * (taper ** 2).sum())
    freqs = np.fft.rfftfreq(x.shape[1], d=1.0 / fs)
    band = (freqs >= ALPHA[0]) & (freqs <= ALPHA[1])
    return density[:, band].sum(axis=1) * (freqs[1] - freqs[0])


class BurstDetector:
    """Bursts of one channel's alpha power, one value per second.

    Parameters
    ----------
    baseline_seconds : int
        Seconds whose median power is the baseline.
    factor : float
        A second is "high" when its power exceeds ``factor`` x baseline.
    hold : int
        High seconds in a row that make a burst.
    refractory : int
        Seconds after a burst before the next one may be reported.
    """

    def __init__(self, baseline_seconds: int, factor: float, hold: int, refractory: int):
        self.baseline_seconds, self.factor = baseline_seconds, factor
        self.hold, self.refractory = hold, refractory
        self._first: list[float] = []
        self.baseline: float | None = None
        self._run = 0
        self._last: int | None = None
        self.bursts = 0
        self.high_seconds = 0

    def add(self, second: int, power: float) -> bool:
        """Take the power of second ``second``; True when it completes a burst."""
        if np.isnan(power):
            self._run = 0
            return False
        if self.baseline is None:
            self._first.append(power)
            if len(self._first) == self.baseline_seconds:
                self.baseline = float(np.median(self._first))
            return False
        high = power > self.factor * self.baseline
        self.high_seconds += bool(high)
        self._run = self._run + 1 if high else 0
        if self._run < self.hold:
            return False
        if self._last is not None and second - self._last < self.refractory:
            return False
        self._last = second
        self.bursts += 1
        return True


def _describe(info: dict) -> str:
    """"replayed at 10x" for a replay, "live" for a stream a producer pushes."""
    if "speed" in info:
        return f"a replay of the recording at {float(info['speed']):g}x real time"
    return "live"


def follow(conn, args) -> int:
    """Follow the stream at ``conn.root`` for ``args.seconds`` of wall-clock time.

    Returns the seconds of signal analysed. Raises EOFError or ConnectionError when the
    server goes away.
    """
    from software import StreamSegmentIterator
    svc = conn.root
    info = dict(svc.get_info())
    fs, names = float(info["fs"]), list(info["channels"])
    channel = args.channel or names[0]
    if channel not in names:
        raise SystemExit(f"closed_loop.py: --channel {channel!r} is not in the stream; "
                         f"its channels: {', '.join(names)}")
    row = names.index(channel)
    unit = (info.get("units") or [""])[row] or "signal unit"
    squared = f"{unit}^2"
    step = int(round(fs))
    it = StreamSegmentIterator(step, start=int(info["n_samples"]))    # from the head
    print(f"following {info['path']} ({_describe(info)}): {len(names)} channels at {fs:g} Hz;"
          f" watching {channel}", flush=True)
    detector = BurstDetector(args.baseline_seconds, args.factor, args.hold, args.refractory)
    done = 0
    in_gap = False
    deadline = time.monotonic() + args.seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        window = it.next_or_wait(svc, timeout=min(1.0, left))
        if window is False:
            if it.exhausted:
                break
            if conn.closed:                        # no chunk: is the server still there?
                raise EOFError("the connection is closed")
            conn.ping(timeout=2)                   # raises when the server is gone
            continue
        done += 1
        power = float(alpha_power(window[row:row + 1], fs)[0])
        if np.isnan(power):
            if not in_gap:
                print(f"t={done:6d} s  no data on {channel} (a gap in the recording)",
                      flush=True)
            in_gap = True
            detector.add(done, power)
            continue
        in_gap = False
        had_baseline = detector.baseline is not None
        if detector.add(done, power):
            ratio = power / detector.baseline
            print(f"t={done:6d} s  ALPHA BURST on {channel}: {power:8.1f} {squared} "
                  f"({10 * np.log10(ratio):+.1f} dB over baseline, {args.hold} s above "
                  f"{args.factor:g}x) -> react", flush=True)
        elif detector.baseline is not None and not had_baseline:
            print(f"t={done:6d} s  baseline: median alpha power of {channel} over "
                  f"{args.baseline_seconds} s = {detector.baseline:.1f} {squared}; "
                  f"a burst is {args.hold} s above {args.factor * detector.baseline:.1f} "
                  f"{squared}", flush=True)
        elif done % STATUS_EVERY == 0:
            print(f"t={done:6d} s  {channel} alpha power {power:8.1f} {squared}", flush=True)
    print(f"analysed {done} s of {channel}: {detector.bursts} alpha bursts, "
          f"{detector.high_seconds} s above {args.factor:g}x baseline", flush=True)
    return done


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--speed", type=float, default=1.0,
                   help="replay speed of the server started here, x real time (default 1)")
    p.add_argument("--seconds", type=float, default=60.0,
                   help="wall-clock seconds to follow the stream (default 60)")
    p.add_argument("--channel", default=None, help="channel to watch (default: the first)")
    p.add_argument("--baseline-seconds", type=int, default=20,
                   help="seconds whose median alpha power is the baseline (default 20)")
    p.add_argument("--factor", type=float, default=2.0,
                   help="a second is high above this many times the baseline (default 2, "
                        "i.e. +3 dB)")
    p.add_argument("--hold", type=int, default=2,
                   help="high seconds in a row that make a burst (default 2)")
    p.add_argument("--refractory", type=int, default=5,
                   help="seconds after a burst before the next one (default 5)")
    args = p.parse_args(argv)
    for name in ("seconds", "speed", "factor"):
        if not getattr(args, name) > 0:
            p.error(f"--{name} must be > 0; {getattr(args, name)} is invalid")
    for name in ("baseline_seconds", "hold", "refractory"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1; {getattr(args, name)} is "
                    "invalid")
    from software import MefStreamServer, get_connection
    if args.port is not None:
        try:
            conn = get_connection(args.port, host=args.host)
        except OSError as exc:
            print(f"closed_loop.py: {exc}", file=sys.stderr)
            return 1
        try:
            follow(conn, args)
        except (EOFError, ConnectionError) as exc:
            print(f"closed_loop.py: the server at {args.host}:{args.port} went away "
                  f"({type(exc).__name__}: {exc}); stopped", file=sys.stderr)
            return 1
        finally:
            conn.close()
        return 0
    import os

    from software.live.replay import Replay
    ensure_demo(args.data_root)
    path = os.path.abspath(os.path.join(args.data_root, args.session))

    def replay(registry):
        recording = registry.acquire(path)
        return Replay(recording, speed=args.speed, release=registry.release).start().stream

    with MefStreamServer(host="127.0.0.1", port=0, data_root=args.data_root, workers=1,
                         cache_mb=64, live=replay) as server:
        conn = get_connection(server.port, host="127.0.0.1")
        try:
            follow(conn, args)
        finally:
            conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
