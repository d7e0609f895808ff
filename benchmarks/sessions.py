"""Long synthetic MEF3 sessions with many short blocks, written quickly.

A session of ``n_blocks`` blocks over ``n_channels`` channels at ``fs`` Hz with 1 s MEF
blocks (``fs`` samples a block, as mef_tools writes for every rate >= 5 kHz) has few
samples, so writing it costs little more than its block headers. Used by
``benchmarks.growth`` to measure what opening a session costs per block.

    python -m benchmarks.sessions --blocks 2070000 --channels 8     # writes and prints the path
"""
from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from .common import DATA_DIR

#: First sample of every synthetic session (2020-09-13, like the demo recording).
START_UUTC = 1_600_000_000_000_000


@dataclass(frozen=True)
class LongSession:
    """A session of ``n_blocks`` one-second MEF blocks in total, spread over the channels.

    Attributes
    ----------
    root : str
        Directory that holds the session (a server's data root).
    n_blocks : int
        Blocks in the whole session (all channels); rounded down to a multiple of
        ``n_channels``.
    n_channels : int
        Channels, each with ``n_blocks // n_channels`` blocks.
    fs : float
        Sampling rate; also the samples per block (blocks of 1 s).
    segments : int
        Segments per channel, each after a 10 s pause.
    gap_every : int
        Every ``gap_every``-th second of each channel is NaN (a gap of one block); 0: none.
    """

    root: str
    n_blocks: int
    n_channels: int = 8
    fs: float = 8.0
    segments: int = 1
    gap_every: int = 0

    @property
    def name(self) -> str:
        return (f"long2_{self.n_blocks}b_{self.n_channels}ch_{self.fs:g}hz_{self.segments}s"
                f"_{self.gap_every}g.mefd")

    @property
    def path(self) -> str:
        return os.path.join(self.root, self.name)

    @property
    def seconds_per_channel(self) -> int:
        return self.n_blocks // self.n_channels


def signal(ls: LongSession, channel: int) -> np.ndarray:
    """The samples of one channel: a ramp plus the channel number, NaN in the gaps.

    Steps of 0.25 so that precision 2 stores every value exactly (an integer x 0.01).
    """
    n = ls.seconds_per_channel * int(ls.fs)
    data = (np.arange(n, dtype=np.float64) % 1000) * 0.25 + channel
    if ls.gap_every:
        per = int(ls.fs)
        idx = np.arange(ls.gap_every - 1, ls.seconds_per_channel, ls.gap_every)
        data.reshape(-1, per)[idx] = np.nan
    return data


def ensure_long_session(ls: LongSession, log=print) -> float | None:
    """Write ``ls`` unless a complete copy exists; return the seconds writing took.

    Complete means its marker file (``<session>.json``, written last) is there.
    """
    marker = ls.path + ".json"  # written last: a complete session
    if os.path.exists(marker) and os.path.isdir(ls.path):
        return None
    import shutil

    from mef_tools.io import MefWriter
    if os.path.exists(ls.path):
        shutil.rmtree(ls.path)
    os.makedirs(ls.root, exist_ok=True)
    t0 = time.perf_counter()
    writer = MefWriter(ls.path, overwrite=False)
    writer.mef_block_len = int(ls.fs)  # samples a block: 1 s blocks
    seg_seconds = ls.seconds_per_channel // ls.segments
    try:
        for ch in range(ls.n_channels):
            data = signal(ls, ch)
            per_seg = seg_seconds * int(ls.fs)
            for k in range(ls.segments):
                first = k * per_seg
                last = len(data) if k == ls.segments - 1 else first + per_seg
                t_start = START_UUTC + int(round(first * 1e6 / ls.fs)) + k * 10_000_000
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ok = writer.write_data(data[first:last], f"ch{ch:03d}", t_start, ls.fs,
                                           precision=2, new_segment=k > 0)
                if not ok:
                    raise RuntimeError(f"mef_tools refused channel {ch} segment {k}")
    finally:
        writer.session.close()
    elapsed = time.perf_counter() - t0
    with open(marker, "w") as fh:
        json.dump({"params": asdict(ls), "write_seconds": elapsed}, fh, indent=1)
    log(f"wrote {ls.path} ({ls.n_blocks} blocks) in {elapsed:.1f} s")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=2_070_000)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--fs", type=float, default=8.0)
    parser.add_argument("--segments", type=int, default=1)
    parser.add_argument("--gap-every", type=int, default=0)
    parser.add_argument("--root", default=os.path.join(DATA_DIR, "growth"))
    args = parser.parse_args()
    ls = LongSession(args.root, args.blocks, args.channels, args.fs, args.segments,
                     args.gap_every)
    ensure_long_session(ls)
    print(ls.path)


if __name__ == "__main__":
    main()
