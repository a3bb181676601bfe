"""Diagrams of the paper's figures, drawn with matplotlib (a placeholder of this branch: the recurrent gradient of
Fig. 3 only)."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch


def recurrent_gradient_diagram(S_gen: int = 3) -> Figure:
    """Fig. 3: the gradient flows of Alg. 1. The same (shared) fine-tuned UNet eps_theta_hat runs every one of the
    S_gen reverse DDIM steps (Eq. 13) from x_t0 to the generated x0_hat; the loss of Eq. 10 on x0_hat sends its
    gradient back through every step (red), and each step adds its part to the one set of weights theta_hat."""
    fig, ax = plt.subplots(figsize=(11, 3.6))
    ax.set_xlim(0, 11)
    ax.set_ylim(0, 3.6)
    ax.axis("off")
    names = ["$x_{t_0}$"] + [f"$x_{{\\tau_{{{S_gen - i}}}}}$" for i in range(1, S_gen)] + ["$\\hat x_0$"]
    xs = [0.6 + i * (8.0 / S_gen) for i in range(S_gen + 1)]
    y = 1.2

    def box(x: float, yc: float, text: str, color: str, w: float = 0.9, h: float = 0.55) -> None:
        ax.add_patch(FancyBboxPatch((x - w / 2, yc - h / 2), w, h, boxstyle="round,pad=0.05", fc=color, ec="k"))
        ax.text(x, yc, text, ha="center", va="center", fontsize=11)

    def arrow(a: tuple, b: tuple, color: str, style: str = "-", rad: float = 0.0) -> None:
        ax.add_patch(
            FancyArrowPatch(
                a, b, arrowstyle="-|>", mutation_scale=14, color=color, ls=style, connectionstyle=f"arc3,rad={rad}"
            )
        )

    for x, name in zip(xs, names):
        box(x, y, name, "white", w=0.7)
    box(5.0, 3.05, "$\\epsilon_{\\hat\\theta}$: one UNet, shared by every step", "#fde9c9", w=4.6)
    for i in range(S_gen):
        mid = (xs[i] + xs[i + 1]) / 2
        arrow((xs[i] + 0.4, y + 0.08), (xs[i + 1] - 0.4, y + 0.08), "k")
        ax.text(mid, y + 0.3, f"DDIM step (Eq. 13)\nat $\\tau_{{{S_gen - i}}}$", ha="center", fontsize=8)
        arrow((5.0 + (mid - 5.0) * 0.5, 2.75), (mid, y + 0.62), "0.4", ":")
        arrow((mid, y + 0.62), (5.0 + (mid - 5.0) * 0.5 + 0.15, 2.75), "tab:red", "--", rad=-0.25)
        arrow((xs[i + 1] - 0.4, y - 0.12), (xs[i] + 0.4, y - 0.12), "tab:red", "--")
    box(10.1, y, "$\\mathcal{L}$ (Eq. 10)", "#f6d5d5", w=1.2)
    arrow((xs[-1] + 0.4, y + 0.08), (9.5, y + 0.08), "k")
    arrow((9.5, y - 0.12), (xs[-1] + 0.4, y - 0.12), "tab:red", "--")
    ax.text(10.1, 0.55, "$x_0$, $y_{ref}$, $y_{tar}$", ha="center", fontsize=10)
    ax.text(
        5.0,
        0.15,
        "black: forward pass (generation)   grey: the same weights used at every step   "
        "red: gradient of $\\mathcal{L}$, back through every step into $\\hat\\theta$",
        ha="center",
        fontsize=9,
    )
    ax.set_title("Fig. 3: the recurrent gradient of Alg. 1 (backpropagation through all $S_{gen}$ steps)")
    plt.close(fig)
    return fig
