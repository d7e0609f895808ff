"""Records where users look: plot and plot --follow marks (checked pixel by pixel), MNE
annotations, info's counts by type, and exports (X.records.csv beside the samples; a MEF3
export carries them, read back with MefReader.get_annotations)."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402

from software import MefStreamServer, Record, get_connection  # noqa: E402
from software.cli import record_export  # noqa: E402
from software.cli.common import UsageError  # noqa: E402
from software.plot import follow, plot_window  # noqa: E402
from software.plot.marks import MARK_COLOR, SPAN_COLOR  # noqa: E402
from tests.record_sessions import at, write_events_session  # noqa: E402
from tests.test_plot import render  # noqa: E402
from tests.test_records import annotations, key  # noqa: E402
from tests.util import START  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def events_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("views")
    write_events_session(str(root / "events.mefd"))
    with MefStreamServer(port=0, data_root=str(root), workers=1, cache_mb=16) as srv:
        yield srv


@pytest.fixture
def events(events_server):
    with get_connection(events_server.port, host="127.0.0.1", timeout=10) as conn:
        yield conn.root.open_file("events.mefd")


def is_colour(pixels: np.ndarray, colour: str) -> np.ndarray:
    return np.all(np.abs(pixels - np.array(to_rgb(colour))) < 2.5 / 255, axis=-1)


def near(pixels: np.ndarray, colour: str) -> np.ndarray:
    """Pixels of an antialiased line of ``colour`` (nearer it than any other colour drawn)."""
    return np.linalg.norm(pixels - np.array(to_rgb(colour)), axis=-1) < 0.25


def column(fig, seconds: float) -> int:
    """Image column of ``seconds`` after START."""
    ax = fig.axes[0]
    return int(round(ax.transData.transform([(START / 1e6 + seconds, 0)])[0][0]))


def row_band(fig, name: str) -> tuple[int, int]:
    """Image rows of the band of a channel's trace."""
    ax = fig.axes[0]
    names = [t.get_text() for t in ax.get_yticklabels()]
    offsets = ax.get_yticks()
    spacing = abs(offsets[0] - offsets[1])
    y = offsets[names.index(name)]
    height = fig.get_figheight() * fig.dpi
    (_, top), (_, bottom) = ax.transData.transform([(0, y + spacing / 2), (0, y - spacing / 2)])
    return int(height - top) + 3, int(height - bottom) - 3


def axes_rows(fig) -> tuple[int, int]:
    box = fig.axes[0].get_window_extent()
    height = fig.get_figheight() * fig.dpi
    return int(height - box.y1) + 2, int(height - box.y0) - 2


def test_plot_marks_instants_as_lines_and_durations_as_spans(events):
    fig = plot_window(events, start=0, seconds=10)
    image = render(fig)
    top, bottom = axes_rows(fig)
    # the note at 1 s: a line down the whole height (below the labels)
    line = column(fig, 1.0)
    marked = near(image[top + 20:bottom, line - 1:line + 2], MARK_COLOR).any(axis=1)
    assert marked.mean() > 0.95
    # the EDFA from 5 s to 7 s: the background of every row is shaded inside, not outside
    inside = image[top + 20:bottom, column(fig, 5.3):column(fig, 6.7)]
    outside = image[top + 20:bottom, column(fig, 7.3):column(fig, 8.7)]
    assert is_colour(inside, SPAN_COLOR).mean() > 0.3
    assert is_colour(outside, SPAN_COLOR).mean() == 0
    # a channel-level EDFA (a, 3 s to 3.5 s) shades a's band only
    a0, a1 = row_band(fig, "a")
    b0, b1 = row_band(fig, "b")
    span = slice(column(fig, 3.1), column(fig, 3.4))
    assert is_colour(image[a0:a1, span], SPAN_COLOR).mean() > 0.2
    assert is_colour(image[b0:b1, span], SPAN_COLOR).mean() == 0
    # with no records drawn, none of this is there
    assert not near(render(plot_window(events, start=10, seconds=10)), MARK_COLOR).any()


def test_plot_labels_the_marks(events):
    fig = plot_window(events, start=0, seconds=10)
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert {"eyes closed", "on sample 1000", "seizure onset", "spike train",
            "b flat"} <= texts


def test_a_channel_not_drawn_hides_its_records(events):
    fig = plot_window(events, start=0, seconds=10, channels=["b", "index"])
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert "b flat" in texts and "spike train" not in texts
    assert tuple(events.get_info()["channels"]) == ("a", "b", "index")    # put back


def test_plot_follow_frames_show_the_marks(events, tmp_path):
    written = follow(events, seconds=5, step=5, start=0, frames=str(tmp_path), max_frames=2)
    first, second = (mpimg.imread(path)[:, :, :3] for path in written)
    assert near(first, MARK_COLOR).any() and is_colour(first, SPAN_COLOR).any()
    assert is_colour(second, SPAN_COLOR).any()        # the EDFA from 5 s to 7 s


def test_mne_annotations_hold_the_records_beside_the_gaps(events):
    mne = pytest.importorskip("mne")
    from software.handoff.mne import to_mne_raw
    raw = to_mne_raw(events)
    found = {(d, round(o, 6), round(du, 6), tuple(ch)) for d, o, du, ch in zip(
        raw.annotations.description, raw.annotations.onset, raw.annotations.duration,
        raw.annotations.ch_names)}
    assert ("eyes closed", 1.0, 0.0, ()) in found
    assert ("seizure onset", 5.0, 2.0, ()) in found
    assert ("spike train", 3.0, 0.5, ("a",)) in found
    assert ("focal seizure", 80.0, 15.0, ()) in found
    assert ("on sample 1000", 1000 / 256, 0.0, ()) in found
    assert not {d for d, *_ in found} & {"before the start", "after the end"}  # outside
    assert len(found) == 11
    # a window: the records overlapping it, a duration cut at its start (by MNE)
    part = to_mne_raw(events, start=40.0, stop=70.0)
    got = sorted(zip(part.annotations.onset, part.annotations.description,
                     part.annotations.duration))
    assert [d for _, d, _ in got] == ["long artefact", "electrode pop", "eyes open",
                                      "same time as a note"]
    assert (got[0][0], got[0][2]) == pytest.approx((40.0, 0.5))
    assert isinstance(mne.Annotations, type)


def cli(*args, port) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "software", *args, "--port", str(port)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_info_counts_the_records_by_type(events_server):
    done = cli("info", "events.mefd", port=events_server.port)
    assert done.returncode == 0, done.stderr
    assert "records   13: 8 Note, 4 EDFA, 1 Seiz" in done.stdout.splitlines()
    done = cli("info", "events.mefd", "--json", port=events_server.port)
    assert json.loads(done.stdout)["record_counts"] == {"Note": 8, "EDFA": 4, "Seiz": 1}


def test_csv_export_writes_the_records_beside_the_samples(events_server, events, tmp_path):
    out = tmp_path / "x.csv"
    done = cli("export", "events.mefd", "--start", "2", "--stop", "50", "--out", str(out),
               port=events_server.port)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(open(tmp_path / "x.records.csv", encoding="utf-8")))
    expected = events.get_records(at(2), at(50))
    assert [r["text"] for r in rows] == [r.text for r in expected]
    for row, record in zip(rows, expected):
        assert int(row["time_uutc"]) == record.time_uutc
        assert int(row["sample"]) == record.index - 512       # row of the exported samples
        assert row["type"] == record.type and (row["channel"] or None) == record.channel
        assert (int(row["duration_us"]) if row["duration_us"] else None) == record.duration
        assert json.loads(row["fields"]) == record.fields
    samples = np.loadtxt(out, delimiter=",", skiprows=1)
    on_1000 = next(r for r in rows if r["text"] == "on sample 1000")
    assert samples[int(on_1000["sample"]), 0] == int(on_1000["time_uutc"])   # same row
    # an export without records over it leaves no stale records file
    done = cli("export", "events.mefd", "--start", "10", "--stop", "20", "--out", str(out),
               "--overwrite", port=events_server.port)
    assert done.returncode == 0 and not (tmp_path / "x.records.csv").exists()


def test_mef3_export_carries_the_records(events_server, tmp_path):
    out = tmp_path / "x.mefd"
    done = cli("export", "events.mefd", "--channels", "a,index", "--out", str(out),
               port=events_server.port)
    assert done.returncode == 0, done.stderr
    source = os.path.join(str(events_server.data_root), "events.mefd")
    inside = [a for a in annotations(source) if a["channel"] in (None, "a", "index")
              and at(0) <= a["time"] < at(120)]
    got = annotations(str(out))
    assert sorted(got, key=key) == sorted(inside, key=key)     # field by field, both levels
    assert any(a["channel"] == "a" for a in got) and not any(a["channel"] == "b" for a in got)


def test_a_record_mef3_cannot_store_stops_a_mef3_export():
    odd = Record(START, 0, "Xtra", "odd", None, None, {})
    with pytest.raises(UsageError, match="--out: .*'Xtra'.*cannot store"):
        record_export.check_mef([odd])
    record_export.check_mef([Record(START, 0, "Note", "fine", None, None, {"text": "fine"})])
