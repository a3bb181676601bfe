"""The paper's two method diagrams, drawn with matplotlib: the pipeline of Fig. 2 and the recurrent gradient of
Fig. 3 (with Alg. 2's one-step variant). Each returns a :class:`matplotlib.figure.Figure` of labelled boxes
(``FancyBboxPatch``) and arrows (``FancyArrowPatch``); nothing is computed, so they draw anywhere (Agg included).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

#: Colours: frozen pretrained model, fine-tuned model, data, loss, gradient.
FROZEN, TUNED, DATA, LOSS, GRAD = "#d9e6f5", "#fde2c4", "#eeeeee", "#f6d0d0", "#c0392b"


def _box(ax: Axes, x: float, y: float, text: str, colour: str, w: float = 2.2, h: float = 1.0, size: int = 9) -> None:
    """A rounded box centred at (x, y), ``w`` x ``h`` in data units, holding ``text``."""
    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.05,rounding_size=0.15", fc=colour, ec="0.3", lw=1.0
        )
    )
    ax.text(x, y, text, ha="center", va="center", fontsize=size)


def _arrow(
    ax: Axes,
    start: tuple[float, float],
    end: tuple[float, float],
    label: str = "",
    colour: str = "0.25",
    style: str = "-",
    rad: float = 0.0,
    offset: tuple[float, float] = (0.0, 0.25),
    size: int = 8,
) -> None:
    """An arrow from ``start`` to ``end`` (bent by ``rad``), with ``label`` at its middle moved by ``offset``."""
    ax.add_patch(
        FancyArrowPatch(
            start,
            end,
            arrowstyle="-|>",
            mutation_scale=12,
            color=colour,
            lw=1.4,
            linestyle=style,
            connectionstyle=f"arc3,rad={rad}",
            shrinkA=2,
            shrinkB=2,
        )
    )
    if label:
        mx, my = (start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1]
        ax.text(mx, my, label, ha="center", va="bottom" if offset[1] >= 0 else "top", fontsize=size, color=colour)


def _canvas(ax: Axes, width: float, height: float, title: str) -> None:
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=10)


def pipeline_diagram() -> Figure:
    """The pipeline of DiffusionCLIP (the paper's Fig. 2): the input image ``x_0`` is inverted by deterministic
    DDIM (Eq. 12, S_for steps) with the frozen pretrained ``eps_theta`` into the latent ``x_t0``; the fine-tuned
    ``eps_theta_hat`` (initialised as a copy of ``eps_theta``) generates from it (Eq. 13, S_gen steps) the edited
    image ``x0_hat``. Fine-tuning (Alg. 1) scores ``x0_hat`` with Eq. 10: the directional CLIP loss (Eq. 9)
    between the image change (``x_0`` to ``x0_hat``) and the text change (``y_ref`` to ``y_tar``), plus
    ``lambda_L1`` L1 and ``lambda_ID`` identity (Eq. 11); its gradient updates ``eps_theta_hat``.
    Six boxes and eight arrows (the gradient red and dashed)."""
    fig, ax = plt.subplots(figsize=(11, 5.2))
    _canvas(
        ax,
        17.0,
        8.0,
        "DiffusionCLIP (the paper's Fig. 2): invert with the pretrained model, generate with the fine-tuned one",
    )
    top, bottom = 6.0, 2.0
    _box(ax, 1.5, top, "input image\n$x_0$", DATA)
    _box(ax, 8.5, top, "latent\n$x_{t_0}$", DATA)
    _box(ax, 15.5, top, "edited image\n$\\hat{x}_0$", DATA)
    _box(ax, 5.0, top + 1.35, "pretrained $\\epsilon_\\theta$\n(frozen)", FROZEN, w=2.6, h=0.9)
    _box(ax, 12.0, top + 1.35, "fine-tuned $\\epsilon_{\\hat\\theta}$", TUNED, w=2.6, h=0.9)
    _box(
        ax,
        12.0,
        bottom,
        "Eq. 10:  $\\mathcal{L}_{direction}(\\hat{x}_0, y_{tar};\\ x_0, y_{ref})$  (Eq. 9, CLIP)\n"
        "$+\\ \\lambda_{L1}\\,|x_0 - \\hat{x}_0|\\ +\\ \\lambda_{ID}\\,\\mathcal{L}_{face}(\\hat{x}_0, x_0)$  (Eq. 11)",
        LOSS,
        w=7.6,
        h=1.4,
    )
    _box(ax, 3.0, bottom, "texts: source $y_{ref}$ 'face',\ntarget $y_{tar}$ 'angry face'", DATA, w=4.4, h=1.2)
    _arrow(ax, (2.6, top), (7.4, top), "DDIM inversion\nEq. 12, $S_{for}$ steps", offset=(0, -0.35))
    _arrow(ax, (9.6, top), (14.4, top), "DDIM generation\nEq. 13, $S_{gen}$ steps", offset=(0, -0.35))
    _arrow(ax, (5.0, top + 0.9), (5.0, top + 0.1), style=":")
    _arrow(ax, (12.0, top + 0.9), (12.0, top + 0.1), style=":")
    _arrow(ax, (15.5, top - 0.5), (15.0, bottom + 0.7), "$\\hat{x}_0$", offset=(0.35, 0))
    _arrow(ax, (1.5, top - 0.5), (8.2, bottom + 0.7), "$x_0$ (reference)", rad=0.15, offset=(-1.2, -0.2))
    _arrow(ax, (5.2, bottom), (8.2, bottom))
    _arrow(
        ax,
        (10.3, bottom + 0.7),
        (11.0, top + 0.9),
        "gradient: update $\\hat\\theta$\n(Alg. 1, Fig. 3)",
        colour=GRAD,
        style="--",
        rad=-0.25,
        offset=(-2.0, -0.6),
    )
    ax.text(
        8.5,
        0.3,
        "fine-tuning loop (Alg. 1): repeat over N training images and K epochs; the latents $x_{t_0}$ are "
        "precomputed once with $\\epsilon_\\theta$. Editing (Alg. 3): the top row alone.",
        ha="center",
        fontsize=8,
        color="0.3",
    )
    fig.tight_layout()
    return fig


def recurrent_gradient_diagram(*, shown_steps: int = 3) -> Figure:
    """The gradient of fine-tuning (the paper's Fig. 3) and its GPU-efficient variant (Alg. 2), in two panels.

    Top (Alg. 1): the chain ``x_t0 -> ... -> x0_hat`` through ``shown_steps`` copies of ``eps_theta_hat`` (one per
    DDIM step, Eq. 13; the dots stand for the rest of the S_gen steps), all sharing one set of weights ``theta_hat``;
    the loss (Eq. 10) on the final ``x0_hat``; its gradient flows back through every step (red, dashed) and reaches
    the shared weights from every copy, as in a recurrent net. Bottom (Alg. 2): at every step the loss is taken on
    that step's predicted ``x_0`` (``f_theta_hat``, Eq. 6), its gradient goes through that one step only, the
    weights are updated, and the chain continues from a detached ``x_t``."""
    if shown_steps < 2:
        raise ValueError(f"shown_steps={shown_steps} must be at least 2 (the first and the last step)")
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 7.6))
    width = 3.4 * shown_steps + 5.2
    names = ["$x_{t_0} = x_{\\tau_S}$"] + [f"$x_{{\\tau_{{S-{i}}}}}$" for i in range(1, shown_steps)] + ["$\\hat{x}_0$"]
    names[-2] = "$x_{\\tau_1}$" if shown_steps > 1 else names[-2]
    xs = [1.2 + 3.4 * i for i in range(shown_steps + 1)]

    # Alg. 1: one graph through all S_gen steps
    _canvas(ax1, width, 5.0, "Alg. 1 (Fig. 3): the loss at the end, the gradient back through every step")
    y, wy = 2.2, 4.3
    _box(
        ax1, (xs[0] + xs[-1]) / 2, wy, "shared weights $\\hat\\theta$ (one network for every $t$)", TUNED, w=7.0, h=0.7
    )
    for i, x in enumerate(xs):
        _box(ax1, x, y, names[i], DATA, w=1.9, h=0.8)
    for i in range(shown_steps):
        mid = (xs[i] + xs[i + 1]) / 2
        label = (
            f"$\\epsilon_{{\\hat\\theta}}$ step {i + 1}"
            if i < shown_steps - 1
            else "$\\epsilon_{\\hat\\theta}$ step $S_{gen}$"
        )
        if i == shown_steps - 2 and shown_steps > 2:
            label = "$\\cdots$"
        _arrow(ax1, (xs[i] + 0.95, y), (xs[i + 1] - 0.95, y), label, offset=(0, 0.15))
        _arrow(ax1, (mid - 0.25, wy - 0.35), (mid - 0.25, y + 0.55), style=":", colour="0.5")
        _arrow(ax1, (mid + 0.25, y + 0.55), (mid + 0.25, wy - 0.35), colour=GRAD, style="--")
    loss_x = xs[-1] + 2.6
    _box(ax1, loss_x, y, "loss\nEq. 10", LOSS, w=1.6, h=0.8)
    _arrow(ax1, (xs[-1] + 0.95, y), (loss_x - 0.8, y))
    _arrow(ax1, (loss_x, y - 0.45), (xs[-1] + 0.2, y - 0.45), colour=GRAD, style="--", rad=-0.5)
    for i in range(shown_steps, 0, -1):
        _arrow(ax1, (xs[i], y - 0.45), (xs[i - 1] + 0.2, y - 0.45), colour=GRAD, style="--", rad=-0.35)
    ax1.text(
        (xs[0] + loss_x) / 2,
        0.15,
        "$\\partial$loss/$\\partial\\hat\\theta$ sums the contributions of all $S_{gen}$ copies (back-propagation "
        "through time); memory grows with $S_{gen}$ unless each step is checkpointed",
        ha="center",
        fontsize=8,
        color=GRAD,
    )

    # Alg. 2: a loss at every step, the gradient through that step only
    _canvas(
        ax2, width, 5.0, "Alg. 2 (GPU-efficient): a loss at every step's predicted $x_0$, the gradient through one step"
    )
    for i, x in enumerate(xs):
        _box(ax2, x, 3.6, names[i], DATA, w=1.9, h=0.8)
    for i in range(shown_steps):
        label = "step, detach" if i < shown_steps - 1 else "last step"
        _arrow(ax2, (xs[i] + 0.95, 3.6), (xs[i + 1] - 0.95, 3.6), label, offset=(0, 0.15), style="-")
        px = (xs[i] + xs[i + 1]) / 2
        _box(
            ax2,
            px,
            1.9,
            f"$f_{{\\hat\\theta}}(x_t, t)$\nloss {i + 1}"
            if i < shown_steps - 1
            else "$f_{\\hat\\theta}$\nloss $S_{gen}$",
            LOSS,
            w=1.7,
            h=0.85,
        )
        _arrow(ax2, (xs[i] + 0.3, 3.15), (px - 0.3, 2.35), colour="0.25")
        _arrow(ax2, (px + 0.3, 2.35), (xs[i] + 0.75, 3.15), colour=GRAD, style="--", rad=0.3)
    ax2.text(
        (xs[0] + xs[-1]) / 2,
        0.55,
        "each loss reaches $\\hat\\theta$ through its own step only, and $\\hat\\theta$ is updated after each "
        "one: half the memory, about twice the time (paper, Sec. G)",
        ha="center",
        fontsize=8,
        color=GRAD,
    )
    fig.tight_layout()
    return fig
