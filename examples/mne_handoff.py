"""MNE hand-off: a stretch of the demo around its gap as an mne.io.RawArray, filtered
1-40 Hz around the gap (BAD_ACQ_SKIP), and a plot of raw vs filtered traces.

    python examples/mne_handoff.py [--port 18861] [--out mne_filtered.png]
"""
from __future__ import annotations

if __name__ == "__main__" and not __package__:
    from _handoff_demo import reexec_as_module
    reexec_as_module("mne_handoff")

import numpy as np

from examples._handoff_demo import demo_server, parser


def main(argv=None) -> int:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--start", type=float, default=570.0, help="seconds from the start")
    p.add_argument("--stop", type=float, default=660.0, help="seconds from the start")
    p.add_argument("--out", default="mne_filtered.png", help="PNG to write")
    args = p.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from software import get_connection
    from software.handoff import to_mne_raw

    with demo_server(args) as (host, port):
        conn = get_connection(port, host=host)
        try:
            svc = conn.root.open_file(args.session)
            raw = to_mne_raw(svc, start=args.start, stop=args.stop, ch_types="eeg")
        finally:
            conn.close()
    print(f"{len(raw.ch_names)} channels x {raw.n_times} samples at {raw.info['sfreq']:g} Hz, "
          f"meas_date {raw.info['meas_date'].isoformat()}")
    for onset, duration, what in zip(raw.annotations.onset, raw.annotations.duration,
                                     raw.annotations.description):
        print(f"annotation {what}: {onset:.3f} s + {duration:.3f} s")
    filtered = raw.copy().filter(1.0, 40.0, verbose="error")
    data = filtered.get_data()
    gap = np.isnan(raw.get_data()[0])
    print(f"after filtering: {int(np.isfinite(data[:, ~gap]).all())} (1 = every sample "
          f"outside the gap finite), {int(gap.sum())} gap samples left NaN")
    times = raw.times + raw.first_time
    fig, ax = plt.subplots(figsize=(10, 5), dpi=80)
    for row in range(min(4, len(raw.ch_names))):
        offset = -row * 150.0
        ax.plot(times, raw.get_data()[row] * 1e6 + offset, color="0.75", lw=0.5)
        ax.plot(times, data[row] * 1e6 + offset, lw=0.6, label=raw.ch_names[row])
    for onset, duration in zip(raw.annotations.onset, raw.annotations.duration):
        ax.axvspan(onset, onset + duration, color="tab:red", alpha=0.15, label="BAD_ACQ_SKIP")
    ax.set_xlabel("seconds from the session start")
    ax.set_ylabel("µV (offset per channel)")
    ax.set_title("raw (grey) and 1-40 Hz filtered around the gap")
    ax.legend(loc="upper right", fontsize=7)
    fig.savefig(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
