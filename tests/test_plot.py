"""Pictures: plot_window and follow render real windows of the test session (Agg), checked
pixel by pixel: size, not blank, the gap shaded where it is and nowhere else."""
from __future__ import annotations

import datetime as dt
import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.colors import to_rgb

from software.plot import draw_window, follow, plot_window, windows
from software.plot.window import DPI, GAP_COLOR, figure_size
from tests.conftest import GAP
from tests.util import FS, START, reference

ALL = ("Cz", "Fp1", "Fp2", "O1", "O2", "index")


def render(fig) -> np.ndarray:
    """The figure as an RGB array of its PNG (rows from the top)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    buffer.seek(0)
    return mpimg.imread(buffer)[:, :, :3]


def is_colour(pixels: np.ndarray, colour: str) -> np.ndarray:
    return np.all(np.abs(pixels - np.array(to_rgb(colour))) < 2.5 / 255, axis=-1)


def pixel_columns(fig, ax, t0: float, t1: float) -> tuple[int, int]:
    """Image columns of the time span [t0, t1] (seconds since the epoch), inside it."""
    (x0, _), (x1, _) = ax.transData.transform([(t0, 0), (t1, 0)])
    return int(np.ceil(x0)) + 2, int(np.floor(x1)) - 2


def axes_rows(fig, ax) -> tuple[int, int]:
    """Image rows of the axes, below the gap label."""
    box = ax.get_window_extent()
    height = fig.get_figheight() * fig.dpi
    return int(height - box.y1) + 20, int(height - box.y0) - 2


@pytest.fixture
def svc(conn):
    return conn.root.open_file("main.mefd")


def test_window_has_the_size_and_is_not_blank(svc):
    fig = plot_window(svc, start=20, seconds=15)
    image = render(fig)
    width, height = figure_size(len(ALL))
    assert image.shape[:2] == (round(height * DPI), round(width * DPI))
    colours = np.unique((image * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 50                        # antialiased traces and text
    assert (image.sum(axis=-1) < 1.5).mean() > 0.05  # dark ink: traces, not an empty frame


def test_the_gap_is_shaded_where_it_is_and_labelled(svc):
    fig = plot_window(svc, start=35, seconds=20)
    ax = fig.axes[0]
    fig.canvas.draw()
    image = render(fig)
    top, bottom = axes_rows(fig, ax)
    gap0, gap1 = ((START + g * 1e6 / FS) / 1e6 for g in GAP)
    c0, c1 = pixel_columns(fig, ax, gap0, gap1)
    inside = is_colour(image[top:bottom, c0:c1], GAP_COLOR)
    assert inside.mean() > 0.97
    d0, d1 = pixel_columns(fig, ax, START / 1e6 + 35.5, gap0 - 0.2)   # data before the gap
    assert is_colour(image[top:bottom, d0:d1], GAP_COLOR).mean() < 0.02
    assert [t.get_text() for t in ax.texts].count("gap") == 1


def test_no_data_past_the_end(svc):
    fig = plot_window(svc, start=180, seconds=10)
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert "no data" in labels and "gap" not in labels


def test_traces_are_the_samples_of_the_window(svc, main_path):
    """The index channel's trace is that channel's samples of exactly this window."""
    fig = plot_window(svc, start=dt.datetime(2020, 9, 13, 12, 26, 45), seconds=4,
                      channels=["index", "Fp1"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["index", "Fp1"]
    ref = reference(main_path, ["index"])[0]
    first = int(5 * FS)
    assert dt.datetime.fromtimestamp(START / 1e6, dt.timezone.utc).second == 40
    expected = ref[first:first + int(4 * FS)]
    y = ax.lines[0].get_ydata()
    np.testing.assert_allclose(y - y[0], expected - expected[0], atol=1e-9)
    assert tuple(dict(svc.get_info())["channels"]) == ALL   # put back afterwards
    scale = [t.get_text() for t in ax.texts if "V" in t.get_text()]
    assert scale and scale[0].endswith(" µV")
    assert ax.get_xticklabels()[0].get_text() == "12:26:45"


def test_a_long_window_is_an_envelope_that_keeps_the_extremes(svc, main_path):
    fig = plot_window(svc, start=0, seconds=185, channels=["Fp1"])
    line = fig.axes[0].lines[0]
    ref = reference(main_path, ["Fp1"])[0]
    y = line.get_ydata()
    assert len(y) < len(ref) / 5
    centre = np.nanmedian(ref)       # each trace is drawn around its median (one row: at 0)
    assert np.nanmax(y) + centre == pytest.approx(np.nanmax(ref), abs=1e-9)
    assert np.nanmin(y) + centre == pytest.approx(np.nanmin(ref), abs=1e-9)


def test_nan_run_of_one_channel_shades_only_its_row():
    data = np.random.default_rng(1).normal(0, 20, (3, 2560))
    data[1, 1000:1500] = np.nan
    fig = draw_window(data, START, FS, ["a", "b", "c"], ["uV"] * 3, spacing=100.0)
    ax = fig.axes[0]
    fig.canvas.draw()
    image = render(fig)
    x0 = START / 1e6
    c0, c1 = pixel_columns(fig, ax, x0 + 1000 / FS, x0 + 1500 / FS)
    height = fig.get_figheight() * fig.dpi

    def row_pixels(offset: float) -> np.ndarray:
        _, y = ax.transData.transform((x0, offset))
        r = int(height - y)
        return image[r - 5:r + 5, c0:c1]

    assert is_colour(row_pixels(-100.0), GAP_COLOR).mean() > 0.97   # channel b
    assert is_colour(row_pixels(0.0), GAP_COLOR).mean() < 0.5       # channel a: traces
    assert "gap" not in [t.get_text() for t in ax.texts]


def test_windows_move_by_step_and_hold_the_samples(svc, main_path):
    ref = reference(main_path, ALL)
    got = []
    for first, data in windows(svc, seconds=5, step=2, start=10):
        got.append((first, data.copy()))
        if len(got) == 4:
            break
    width, step = int(5 * FS), int(2 * FS)
    assert [f for f, _ in got] == [int(10 * FS) + k * step for k in range(4)]
    for first, data in got:
        np.testing.assert_array_equal(data, ref[:, first:first + width])


def test_follow_writes_frames_of_consecutive_windows(svc, tmp_path):
    paths = follow(svc, seconds=5, step=5, start=30, frames=str(tmp_path), max_frames=3)
    assert [p.rsplit("/", 1)[-1] for p in paths] == [f"frame_{k:05d}.png" for k in range(3)]
    images = [mpimg.imread(p)[:, :, :3] for p in paths]
    assert all(im.shape == images[0].shape for im in images)
    assert not np.array_equal(images[0], images[1])  # the window moved
    # the frame of 40-45 s holds the start of the gap (40.5 s): shaded columns appear
    shaded = [is_colour(im, GAP_COLOR).mean() for im in images]
    assert shaded[0] < 0.01 < shaded[2]


def test_follow_stops_at_the_end_of_a_file(svc, tmp_path):
    paths = follow(svc, seconds=5, step=10, start=170, frames=str(tmp_path))
    assert len(paths) == 2    # 170-175 s, then the last 10 s arrive at once: 180-185 s


def test_bad_arguments_are_refused(svc):
    with pytest.raises(ValueError, match="seconds"):
        plot_window(svc, seconds=0)
    with pytest.raises(TypeError, match="start"):
        plot_window(svc, start="soon")


def test_save_writes_a_palette_png_identical_to_the_figure(svc, tmp_path):
    from software.plot.window import save
    fig = plot_window(svc, start=35, seconds=20)
    save(fig, str(tmp_path / "w.png"))
    written = mpimg.imread(tmp_path / "w.png")[:, :, :3]
    np.testing.assert_array_equal(written, render(fig))
