"""The report's PNG plots: a valid image on disk whose pixels follow the data, and the series,
labels and ticks each plot draws (read from the Figure handed to ``_save``)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from derta.report import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture()
def drawn(monkeypatch):
    """The Figures the plot functions save, in call order (still saved to disk as usual)."""
    figs = []
    save = plots._save

    def keep(fig, path):
        figs.append(fig)
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return figs


def pixels(path):
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    return img


def legend_labels(ax) -> list[str]:
    leg = ax.get_legend()
    return [t.get_text() for t in leg.get_texts()] if leg else []


def tick_labels(ax) -> list[str]:
    return [t.get_text() for t in ax.get_xticklabels()]


def quiet(fn, *args, **kw):
    # matplotlib warns that an empty legend has no artists; the plot is still written
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No artists with labels found")
        return fn(*args, **kw)


def cell(asr, low=None, high=None):
    return {"asr": asr, "ci_low": asr if low is None else low, "ci_high": asr if high is None else high}


ASR_TABLE = {
    "vanilla": {"direct": cell(0.5, 0.4, 0.6), "completion": cell(1.0, 0.9, 1.0)},
    "derta": {"direct": cell(0.0, 0.0, 0.1), "completion": cell(0.25, 0.1, 0.4), "prefill-5": cell(0.75)},
}


# ---- plot_asr -------------------------------------------------------------------------------

def test_asr_writes_a_png_that_follows_the_data(tmp_path):
    a = plots.plot_asr(ASR_TABLE, tmp_path / "sub" / "a.png")
    assert a == tmp_path / "sub" / "a.png"
    same = plots.plot_asr(ASR_TABLE, tmp_path / "same.png")
    other = {m: {k: cell(1 - c["asr"]) for k, c in cells.items()} for m, cells in ASR_TABLE.items()}
    b = plots.plot_asr(other, tmp_path / "b.png")
    pa, pb = pixels(a), pixels(b)
    assert pa.shape == pb.shape and not np.array_equal(pa, pb)
    assert np.array_equal(pa, pixels(same))  # deterministic


def test_asr_bars_ticks_and_legend(tmp_path, drawn):
    plots.plot_asr(ASR_TABLE, tmp_path / "a.png", title="ASR here")
    (ax,) = drawn[0].axes
    assert tick_labels(ax) == ["direct", "completion", "prefill-5"]  # attacks in first-seen order
    assert legend_labels(ax) == ["vanilla", "derta"]
    assert ax.get_title() == "ASR here" and ax.get_ylabel() == "ASR (%)" and ax.get_ylim() == (0, 105)
    bars = [(round(p.get_x() + p.get_width() / 2, 3), p.get_height()) for p in ax.patches]
    # one group per attack (x = 0, 1, 2), one bar per model: vanilla left of centre, derta right
    assert bars == [(-0.2, 50.0), (0.8, 100.0), (0.2, 0.0), (1.2, 25.0), (2.2, 75.0)]
    colours = {tuple(p.get_facecolor()) for p in ax.patches[:2]}, {tuple(p.get_facecolor()) for p in ax.patches[2:]}
    assert len(colours[0]) == len(colours[1]) == 1 and colours[0] != colours[1]


def test_asr_whiskers_are_the_confidence_interval(tmp_path, drawn):
    plots.plot_asr({"m": {"direct": cell(0.5, 0.4, 0.7)}}, tmp_path / "a.png")
    (ax,) = drawn[0].axes
    err = next(c for c in ax.containers if type(c).__name__ == "ErrorbarContainer")
    (segment,) = err.lines[2][0].get_segments()
    assert np.allclose(segment[:, 1], [40.0, 70.0])


def test_asr_skips_undefined_cells(tmp_path, drawn):
    table = {"vanilla": {"direct": cell(0.5), "completion": {"asr": None, "ci_low": None, "ci_high": None}},
             "derta": {"completion": cell(0.25)}}
    plots.plot_asr(table, tmp_path / "a.png")
    (ax,) = drawn[0].axes
    assert tick_labels(ax) == ["direct", "completion"]
    assert sorted(p.get_height() for p in ax.patches) == [25.0, 50.0]


def test_asr_empty_table_writes_an_empty_plot(tmp_path, drawn):
    path = quiet(plots.plot_asr, {}, tmp_path / "a.png")
    pixels(path)
    (ax,) = drawn[0].axes
    assert len(ax.patches) == 0 and tick_labels(ax) == [] and legend_labels(ax) == []


# ---- plot_prefill ---------------------------------------------------------------------------

CURVES = {"vanilla": {20: 1.0, 5: 0.5, 10: 0.75}, "derta": {5: 0.0, 40: 0.25}}


def test_prefill_writes_a_png_that_follows_the_data(tmp_path):
    a = plots.plot_prefill(CURVES, tmp_path / "a.png")
    b = plots.plot_prefill({m: {n: 1 - v for n, v in pts.items()} for m, pts in CURVES.items()}, tmp_path / "b.png")
    pa, pb = pixels(a), pixels(b)
    assert pa.shape == pb.shape and not np.array_equal(pa, pb)


def test_prefill_lines_ticks_and_legend(tmp_path, drawn):
    plots.plot_prefill(CURVES, tmp_path / "a.png")
    (ax,) = drawn[0].axes
    assert legend_labels(ax) == ["vanilla", "derta"]
    assert list(ax.get_xticks()) == [5, 10, 20, 40]  # exactly the N values run
    (v, d) = ax.get_lines()
    assert list(v.get_xdata()) == [5, 10, 20] and list(v.get_ydata()) == [50.0, 75.0, 100.0]  # sorted by N
    assert list(d.get_xdata()) == [5, 40] and list(d.get_ydata()) == [0.0, 25.0]
    assert ax.get_xlabel() == "prefilled harmful tokens N" and ax.get_title() == "Prefilling attack"


def test_prefill_empty_curves_write_an_empty_plot(tmp_path, drawn):
    pixels(quiet(plots.plot_prefill, {}, tmp_path / "a.png"))
    (ax,) = drawn[0].axes
    assert len(ax.get_lines()) == 0 and legend_labels(ax) == []


def test_prefill_model_without_points_is_still_named(tmp_path, drawn):
    plots.plot_prefill({"vanilla": {5: 0.5}, "derta (no data)": {}}, tmp_path / "a.png")
    (ax,) = drawn[0].axes
    assert legend_labels(ax) == ["vanilla", "derta (no data)"] and list(ax.get_xticks()) == [5]


# ---- plot_refusal_positions -----------------------------------------------------------------

POSITIONS = {"vanilla": [0.1, 0.2, 0.5, 1.0], "derta": [0.6, 0.9, 1.0]}


def test_refusal_positions_writes_a_png_that_follows_the_data(tmp_path):
    a = plots.plot_refusal_positions(POSITIONS, tmp_path / "a.png")
    b = plots.plot_refusal_positions({"vanilla": [1.0, 1.0, 1.0, 1.0], "derta": [0.0, 0.0, 0.1]}, tmp_path / "b.png")
    pa, pb = pixels(a), pixels(b)
    assert pa.shape == pb.shape and not np.array_equal(pa, pb)


def test_refusal_positions_lines_and_labels(tmp_path, drawn):
    plots.plot_refusal_positions(POSITIONS, tmp_path / "a.png", unit="words")
    (ax,) = drawn[0].axes
    assert legend_labels(ax) == ["vanilla", "derta"]
    (v, d) = ax.get_lines()
    assert list(v.get_xdata()) == [1, 2, 3, 4] and list(v.get_ydata()) == [0.1, 0.2, 0.5, 1.0]  # positions start at 1
    assert list(d.get_xdata()) == [1, 2, 3]
    assert ax.get_xlabel() == "position of the first refusal (words)" and ax.get_title() == "Where refusals start"


def test_refusal_positions_empty_writes_an_empty_plot(tmp_path, drawn):
    pixels(quiet(plots.plot_refusal_positions, {}, tmp_path / "a.png"))
    (ax,) = drawn[0].axes
    assert len(ax.get_lines()) == 0 and legend_labels(ax) == [] and ax.get_xlabel() == "position of the first refusal (tokens)"


# ---- plot_lines -----------------------------------------------------------------------------

SERIES = {"lie": [0.5, None, 0.25], "confess": [0.0, 1.0]}


def test_lines_writes_a_png_that_follows_the_data(tmp_path):
    a = plots.plot_lines(SERIES, tmp_path / "a.png", "turn", "rate (%)", "Per turn")
    b = plots.plot_lines({"lie": [0.0, None, 1.0], "confess": [1.0, 0.0]}, tmp_path / "b.png", "turn", "rate (%)", "Per turn")
    pa, pb = pixels(a), pixels(b)
    assert pa.shape == pb.shape and not np.array_equal(pa, pb)


def test_lines_skip_missing_steps_and_tick_whole_steps(tmp_path, drawn):
    plots.plot_lines(SERIES, tmp_path / "a.png", xlabel="assistant turn", ylabel="lie rate (%)", title="Lies\nmodel")
    (ax,) = drawn[0].axes
    assert legend_labels(ax) == ["lie", "confess"]
    (lie, confess) = ax.get_lines()
    assert list(lie.get_xdata()) == [1, 3] and list(lie.get_ydata()) == [50.0, 25.0]  # step 2 undefined: no point
    assert list(confess.get_xdata()) == [1, 2] and list(confess.get_ydata()) == [0.0, 100.0]
    assert list(ax.get_xticks()) == [1, 2, 3]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("assistant turn", "lie rate (%)", "Lies\nmodel")


def test_lines_empty_series_write_an_empty_plot(tmp_path, drawn):
    pixels(quiet(plots.plot_lines, {}, tmp_path / "a.png", "x", "y", "t"))
    (ax,) = drawn[0].axes
    assert len(ax.get_lines()) == 0 and legend_labels(ax) == []


def test_every_plot_closes_its_figure(tmp_path):
    import matplotlib.pyplot as plt

    before = set(plt.get_fignums())
    plots.plot_asr(ASR_TABLE, tmp_path / "a.png")
    plots.plot_prefill(CURVES, tmp_path / "b.png")
    plots.plot_refusal_positions(POSITIONS, tmp_path / "c.png")
    plots.plot_lines(SERIES, tmp_path / "d.png", "x", "y", "t")
    assert set(plt.get_fignums()) == before
