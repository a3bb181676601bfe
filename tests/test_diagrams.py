"""The method diagrams (dclip.diagrams): Fig. 2's pipeline and Fig. 3's recurrent gradient draw off-screen (Agg)
with the boxes, labels and arrows the paper's figures have."""

import io

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from dclip import diagrams  # noqa: E402


def texts(fig: Figure) -> str:
    return "\n".join(t.get_text() for t in fig.findobj(Text))


def count(fig: Figure, kind: type) -> int:
    return len([p for ax in fig.axes for p in ax.patches if isinstance(p, kind)])


def renders(fig: Figure) -> bool:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=40)
    return buffer.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pipeline_diagram_has_the_boxes_arrows_and_equations_of_fig2():
    fig = diagrams.pipeline_diagram()
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert matplotlib.get_backend().lower() == "agg" and renders(fig)
    # x0, x_t0, x0_hat, eps_theta, eps_theta_hat, the loss, the texts
    assert count(fig, FancyBboxPatch) == 7
    # inversion, generation, two model-to-arrow links, x0_hat and x0 and the texts into the loss, the gradient
    assert count(fig, FancyArrowPatch) == 8
    gradient = [p for p in fig.axes[0].patches if isinstance(p, FancyArrowPatch) and p.get_linestyle() == "--"]
    assert len(gradient) == 1 and to_hex(gradient[0].get_edgecolor()) == diagrams.GRAD
    text = texts(fig)
    for phrase in (
        "$x_0$",
        "$x_{t_0}$",
        "$\\hat{x}_0$",
        "pretrained $\\epsilon_\\theta$",
        "fine-tuned $\\epsilon_{\\hat\\theta}$",
        "Eq. 12, $S_{for}$ steps",
        "Eq. 13, $S_{gen}$ steps",
        "Eq. 10",
        "Eq. 9, CLIP",
        "\\lambda_{L1}",
        "\\lambda_{ID}",
        "$y_{ref}$",
        "$y_{tar}$",
        "update $\\hat\\theta$",
    ):
        assert phrase in text, phrase


@pytest.mark.parametrize("steps", [2, 3, 5])
def test_recurrent_gradient_diagram_sends_the_gradient_back_through_every_step(steps):
    fig = diagrams.recurrent_gradient_diagram(shown_steps=steps)
    assert isinstance(fig, Figure) and len(fig.axes) == 2 and renders(fig)
    alg1, alg2 = fig.axes
    grad1 = [p for p in alg1.patches if isinstance(p, FancyArrowPatch) and p.get_linestyle() == "--"]
    # back through each of the steps and from the loss to x0_hat, and up to the shared weights from every copy
    assert len(grad1) == steps + 1 + steps
    # Alg. 1: the states x_t0 ... x0_hat, the loss, the shared weights; Alg. 2: the states and one loss per step
    assert len([p for p in alg1.patches if isinstance(p, FancyBboxPatch)]) == steps + 1 + 2
    assert len([p for p in alg2.patches if isinstance(p, FancyBboxPatch)]) == steps + 1 + steps
    grad2 = [p for p in alg2.patches if isinstance(p, FancyArrowPatch) and p.get_linestyle() == "--"]
    assert len(grad2) == steps  # one step each
    text = texts(fig)
    for phrase in ("$x_{t_0} = x_{\\tau_S}$", "$\\hat{x}_0$", "shared weights", "step $S_{gen}$", "Eq. 10", "Alg. 2"):
        assert phrase in text, phrase
    assert ("$\\cdots$" in text) == (steps > 2)


def test_recurrent_gradient_diagram_needs_two_steps():
    with pytest.raises(ValueError, match="at least 2"):
        diagrams.recurrent_gradient_diagram(shown_steps=1)
