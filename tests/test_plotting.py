"""Figures: the numbers drawn are the numbers given, and every figure carries its labels."""

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402

from dclip.plotting import plot_bars, plot_matrix, show_images  # noqa: E402


def test_plot_bars_draws_each_value_as_a_bar_of_that_height():
    values = {"angry": {"ours": 0.98, "baseline": 0.39}, "zombie": {"ours": 0.72, "baseline": 0.34}}
    fig = plot_bars(values, title="success", ylabel="fraction")
    ax = fig.axes[0]
    heights = sorted(round(p.get_height(), 2) for p in ax.patches)
    assert heights == [0.34, 0.39, 0.72, 0.98]
    assert ax.get_title() == "success" and ax.get_ylabel() == "fraction"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["angry", "zombie"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["ours", "baseline"]


def test_plot_matrix_writes_every_value_in_its_cell():
    fig = plot_matrix(torch.tensor([[0.1, 0.2], [0.3, 0.4]]), ["a", "b"], ["x", "y"], title="m")
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ["0.10", "0.20", "0.30", "0.40"]


def test_show_images_labels_rows_and_columns():
    fig = show_images({"source": torch.zeros(2, 3, 8, 8), "edit": torch.ones(2, 3, 8, 8)}, ["face 1", "face 2"])
    axes = fig.axes
    assert axes[0].get_ylabel() == "source" and axes[2].get_ylabel() == "edit"
    assert [axes[0].get_title(), axes[1].get_title()] == ["face 1", "face 2"]
