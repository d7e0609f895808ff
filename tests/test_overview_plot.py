"""``plot --overview`` (issue 15): a real PNG of min/max bands, inspected pixel by pixel,
and bands that are exactly the server's envelope."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.colors import to_rgb

from software.plot import plot_overview
from software.plot.overview import BAND_COLOR, envelope_of
from software.plot.window import DPI, GAP_COLOR, figure_size
from tests.conftest import GAP, SEGMENT2_AT, SEGMENT2_UUTC
from tests.test_cli import cli
from tests.util import FS, START


def is_colour(pixels: np.ndarray, colour: str, tolerance: float = 2.5 / 255) -> np.ndarray:
    return np.all(np.abs(pixels - np.array(to_rgb(colour))) < tolerance, axis=-1)


def test_the_overview_png_has_a_band_per_channel_and_the_gaps_shaded(server, tmp_path):
    out = tmp_path / "overview.png"
    done = cli("plot", "main.mefd", "--overview", "--out", str(out), port=server.port)
    assert done.returncode == 0, done.stderr
    assert "min/max overview of the whole recording" in done.stdout
    image = mpimg.imread(out)[:, :, :3]
    width, height = figure_size(6)
    assert image.shape[:2] == (round(height * DPI), round(width * DPI))
    # the axes: from the figure's layout (0.9 in left, 1.0 in right, 0.6 bottom, 0.45 top)
    left, right = int(0.9 * DPI), int((width - 1.0) * DPI)
    top, bottom = int(0.45 * DPI) + 20, int((height - 0.6) * DPI) - 2
    span = (SEGMENT2_UUTC - START) / 1e6 + (180 * FS - SEGMENT2_AT) / FS   # 185 s drawn

    def column(seconds: float) -> int:
        return int(left + seconds / span * (right - left))

    rows = slice(top, bottom)
    gap = image[rows, column(GAP[0] / FS) + 3:column(GAP[1] / FS) - 3]
    pause = image[rows, column(120.0) + 3:column(125.0) - 3]   # between the two segments
    assert is_colour(gap, GAP_COLOR).mean() > 0.97
    assert is_colour(pause, GAP_COLOR).mean() > 0.97
    assert not is_colour(gap, BAND_COLOR, 0.1).any()
    data = image[rows, column(2):column(38)]
    assert not is_colour(data, GAP_COLOR).any()
    # the five noise channels: a band around each row's centre, white space between them
    # (y from 0.75 spacings above the first row to 0.75 below the last: 6.5 spacings)
    band = is_colour(image[:, column(2):column(38)], BAND_COLOR, 0.1).mean(axis=1)
    slot = (bottom + 18 - top) / 6.5            # rows of the axes per spacing

    def at(rows_from_top: float) -> float:
        y = int(top - 20 + (0.75 + rows_from_top) * slot)
        return float(band[y - 2:y + 3].mean())

    for row in range(5):
        assert at(row) > 0.6, row                # inside the band
        assert at(row + 0.5) < at(row) / 2, row  # between two bands


def test_the_bands_are_the_envelope(conn):
    svc = conn.root.open_file("main.mefd")
    fig = plot_overview(svc, bins=150)
    env, edges = envelope_of(svc, 0, dict(svc.get_info())["n_samples"], 150)
    ax = fig.axes[0]
    bands = ax.collections
    assert len(bands) == 6
    spacing = -ax.get_yticks()[1]
    for row, band in enumerate(bands):
        ys = np.concatenate([p.vertices[:, 1] for p in band.get_paths()])
        finite = ~np.isnan(env[0, row])
        centre = np.median((env[0, row][finite] + env[1, row][finite]) / 2)
        shift = -spacing * row - centre
        assert ys.max() == pytest.approx(np.nanmax(env[1, row]) + shift, abs=1e-9)
        assert ys.min() == pytest.approx(np.nanmin(env[0, row]) + shift, abs=1e-9)
    assert [t.get_text() for t in ax.texts].count("gap") == 2
