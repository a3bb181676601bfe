"""Figures for the notebooks: labelled image grids and curves."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch


def _to_numpy(x: torch.Tensor):
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()


def show_images(
    rows: dict[str, torch.Tensor], col_labels: Sequence[str] | None = None, title: str = "", size: float = 1.2
) -> plt.Figure:
    """A grid of [-1, 1] images: one row per entry of ``rows`` (labelled with its key), columns labelled."""
    n_cols = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(size * n_cols + 1, size * len(rows) + 0.4), squeeze=False)
    for r, (label, images) in enumerate(rows.items()):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.set_xticks([]), ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(images):
                ax.imshow(_to_numpy(images[c]), interpolation="nearest" if images.shape[-1] <= 64 else "antialiased")
            if c == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
            if r == 0 and col_labels is not None and c < len(col_labels):
                ax.set_title(col_labels[c], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_curves(
    curves: dict[str, Sequence[float]],
    x: Sequence[float] | None = None,
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    logx: bool = False,
    logy: bool = False,
) -> plt.Figure:
    """Line plot of named curves, with a title and axis labels."""
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for name, ys in curves.items():
        ax.plot(x if x is not None else range(len(ys)), ys, marker="o" if len(ys) < 20 else None, label=name)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_matrix(
    m: torch.Tensor, rows: Sequence[str], cols: Sequence[str], title: str = "", xlabel: str = "", ylabel: str = ""
) -> plt.Figure:
    """A heat map of a (rows x cols) matrix with each value written in its cell (CLIP similarities, tables)."""
    m = m.detach().float().cpu()
    fig, ax = plt.subplots(figsize=(1.1 * len(cols) + 2.5, 0.45 * len(rows) + 1.5))
    im = ax.imshow(m.numpy(), cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7, color="w")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return fig


def plot_bars(
    values: dict[str, dict[str, float]],
    title: str = "",
    ylabel: str = "",
    logy: bool = False,
    ax: plt.Axes | None = None,
) -> plt.Figure:
    """Grouped bars: ``values[group][series]``, one cluster per group, one colour (and legend entry) per series."""
    if ax is None:
        _, ax = plt.subplots(figsize=(1.4 * len(values) + 2.5, 3.5))
    series = list(dict.fromkeys(s for bars in values.values() for s in bars))
    width = 0.8 / len(series)
    for i, name in enumerate(series):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(values))]
        ax.bar(xs, [bars.get(name, float("nan")) for bars in values.values()], width, label=name)
    ax.set_xticks(range(len(values)), list(values), rotation=20, ha="right", fontsize=8)
    ax.set(title=title, ylabel=ylabel)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3, axis="y")
    if len(series) > 1:
        ax.legend(fontsize=7)
    ax.figure.tight_layout()
    return ax.figure
