"""Whole-file analysis loop: per-channel line length and alpha power per minute, streamed.

The server reads ahead of the loop in reader processes, so decoding overlaps with the
work done on each chunk; nothing but one chunk is ever in this process's memory.

    python examples/whole_file_loop.py [--port 18861] [--chunk-seconds 60]
"""
from __future__ import annotations

if __name__ == "__main__" and not __package__:
    from _handoff_demo import reexec_as_module
    reexec_as_module("whole_file_loop")

import numpy as np

from examples._handoff_demo import demo_server, parser


def alpha_power(chunk: np.ndarray, fs: float) -> np.ndarray:
    """Mean 8-12 Hz power per channel of one chunk (NaN-free part only), in uV^2."""
    good = ~np.isnan(chunk).any(axis=0)
    if good.sum() < fs:              # less than a second of data in this chunk
        return np.full(chunk.shape[0], np.nan)
    x = chunk[:, good]
    x = x - x.mean(axis=1, keepdims=True)
    spectrum = np.abs(np.fft.rfft(x, axis=1)) ** 2 / x.shape[1] ** 2
    freqs = np.fft.rfftfreq(x.shape[1], 1.0 / fs)
    band = (freqs >= 8) & (freqs <= 12)
    return 2 * spectrum[:, band].sum(axis=1)


def main(argv=None) -> int:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--chunk-seconds", type=float, default=60.0, help="seconds per chunk")
    args = p.parse_args(argv)
    from software import StreamSegmentIterator, get_connection

    with demo_server(args) as (host, port):
        conn = get_connection(port, host=host)
        try:
            with conn.root.open_file(args.session) as svc:
                info = svc.get_info()
                fs, names = info["fs"], info["channels"]
                size = int(round(args.chunk_seconds * fs))
                print(f"{len(names)} channels at {fs:g} Hz, {info['n_samples']} samples, "
                      f"chunks of {size}")
                it = StreamSegmentIterator(_range=size)
                for k, chunk in enumerate(it.over(svc)):
                    line_length = np.nanmean(np.abs(np.diff(chunk, axis=1)), axis=1)
                    alpha = alpha_power(chunk, fs)
                    strongest = names[int(np.nanargmax(alpha))] if np.isfinite(alpha).any() \
                        else "-"
                    print(f"chunk {k:3d}: line length {np.nanmean(line_length):6.2f} uV, "
                          f"alpha {np.nanmean(alpha):7.2f} uV^2 (strongest {strongest})")
                assert it.exhausted and it.position == info["n_samples"]
                print(f"done: {it.position} samples per channel")
        finally:
            conn.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
