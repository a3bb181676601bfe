"""ipywidgets controls for the chapters: t0, gamma(t), eta and seed, and a fine-tuning monitor.

A control is two parts. An *explorer* (:mod:`dclip.explorers`) is a plain callable that computes only the images
shown and caches what a slider revisits (tested in the package like any function). :func:`control` puts sliders,
a status line and the figure together: the sliders recompute on release, not while dragging
(``continuous_update=False``); the status line says that a redraw is on its way while it runs, and how long it
took; the figure is a PNG in an ``ipywidgets.Image``, so it changes in place and no stale output piles up.
"""

from __future__ import annotations

import copy
import html
import io
import time
from collections.abc import Callable, Sequence

import ipywidgets as w
import torch

from dclip.ddim import ddim_generate
from dclip.explorers import (
    CombinationExplorer,
    EditExplorer,
    EtaExplorer,
    NoisingExplorer,
    ReconstructionExplorer,
    StochasticEditExplorer,
    StrokeExplorer,
    SwitchExplorer,
)
from dclip.models import DiffusionModel
from dclip.plotting import plot_curves, show_images
from dclip.schedule import Schedule

Draw = Callable[..., "object"]  # keyword arguments (the sliders' values) -> a matplotlib Figure


def figure_png(fig, *, dpi: int = 80) -> bytes:
    """The PNG bytes of a matplotlib figure, which is then closed (so a notebook does not also show it)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _describe(values: dict[str, object]) -> str:
    return ", ".join(f"{k} = {v:.2f}" if isinstance(v, float) else f"{k} = {v}" for k, v in values.items())


class Control(w.VBox):
    """Sliders, a status line and a figure: ``draw(**values)`` is redrawn when a slider is released.

    ``update()`` redraws for the current values; ``redraws`` counts the redraws that finished; an error in ``draw``
    is shown in the status line and the last figure stays."""

    def __init__(self, draw: Draw, sliders: dict[str, w.ValueWidget], *, dpi: int = 80):
        if not sliders:
            raise ValueError("a control needs at least one slider")
        for name, s in sliders.items():
            if not hasattr(s, "continuous_update"):
                raise TypeError(f"{name}: {type(s).__name__} is not a slider")
            s.continuous_update = False  # recompute on release, never while dragging
        self.draw, self.sliders, self.dpi = draw, dict(sliders), dpi
        self.status = w.HTML()
        self.image = w.Image(format="png")
        self.redraws = 0
        super().__init__([w.HBox(list(self.sliders.values())), self.status, self.image])
        for s in self.sliders.values():
            s.observe(self._changed, names="value")
        self.update()

    def values(self) -> dict[str, object]:
        return {name: s.value for name, s in self.sliders.items()}

    def _changed(self, _change: dict) -> None:
        self.update()

    def update(self) -> None:
        values = self.values()
        self.status.value = f"<i>working: {html.escape(_describe(values))} ...</i>"
        start = time.perf_counter()
        try:
            self.image.value = figure_png(self.draw(**values), dpi=self.dpi)
        except Exception as e:  # a control must survive a bad value; the status line says what went wrong
            self.status.value = f"<b>error</b> at {html.escape(_describe(values))}: {html.escape(str(e))}"
            return
        self.redraws += 1
        self.status.value = f"{html.escape(_describe(values))}: drawn in {time.perf_counter() - start:.1f} s"

    def _checked(self, setting: dict[str, object]) -> dict[str, object]:
        """The sliders' values with ``setting`` applied; a name that is no slider or a value off a slider's range
        is an error."""
        unknown = sorted(set(setting) - set(self.sliders))
        if unknown:
            raise ValueError(
                f"snapshot setting {setting}: no slider named {unknown}; the sliders are {list(self.sliders)}"
            )
        values = self.values()
        for name, v in setting.items():
            s = self.sliders[name]
            lo, hi = getattr(s, "min", None), getattr(s, "max", None)
            if lo is not None and hi is not None and not (lo <= v <= hi):
                raise ValueError(f"snapshot setting {setting}: {name} = {v} is outside the slider's range [{lo}, {hi}]")
            options = getattr(s, "options", None)
            if options is not None and lo is None and v not in list(options):
                raise ValueError(
                    f"snapshot setting {setting}: {name} = {v!r} is not one of the options {list(options)}"
                )
            values[name] = v
        return values

    def snapshot(self, settings: Sequence[dict[str, object]], *, title: str | None = None):
        """A static figure of what the control shows at each of ``settings`` (name -> value; a slider not named
        keeps its current value), one labelled panel per setting, top to bottom: a stored picture of the control
        for a reader who does not run the notebook. The sliders are not moved."""
        import matplotlib.image as mpimg
        import matplotlib.pyplot as plt

        if not settings:
            raise ValueError("a snapshot needs at least one setting, e.g. [{'t0': 300}, {'t0': 600}]")
        checked = [self._checked(dict(s)) for s in settings]  # every setting checked before any drawing
        pngs = [mpimg.imread(io.BytesIO(figure_png(self.draw(**v), dpi=self.dpi))) for v in checked]
        labels = [_describe({k: v[k] for k in s} if s else v) for s, v in zip(settings, checked)]
        width = max(p.shape[1] for p in pngs) / self.dpi
        heights = [p.shape[0] / self.dpi + 0.3 for p in pngs]
        fig, axes = plt.subplots(
            len(pngs),
            1,
            figsize=(width, sum(heights) + (0.4 if title else 0)),
            squeeze=False,
            gridspec_kw={"height_ratios": heights},
        )
        for ax, png, label in zip(axes[:, 0], pngs, labels):
            ax.imshow(png)
            ax.set_title(label, fontsize=10, loc="left", fontweight="bold")
            ax.axis("off")
        if title:
            fig.suptitle(title, fontsize=12)
        fig.tight_layout()
        return fig


def control(draw: Draw, sliders: dict[str, w.ValueWidget], *, dpi: int = 80) -> Control:
    """A :class:`Control` over ``sliders`` (name -> ipywidgets slider)."""
    return Control(draw, sliders, dpi=dpi)


def _int_slider(value: int, lo: int, hi: int, step: int, description: str) -> w.IntSlider:
    return w.IntSlider(value=value, min=lo, max=hi, step=step, description=description, continuous_update=False)


def _float_slider(value: float, lo: float, hi: float, step: float, description: str) -> w.FloatSlider:
    return w.FloatSlider(value=value, min=lo, max=hi, step=step, description=description, continuous_update=False)


def _t0_slider(schedule: Schedule, t0: int | None = None, n: int = 9) -> w.IntSlider:
    """A t0 slider over the model's T: n values at T/10, 2T/10, ...; it starts at ``t0`` or in the middle. A start
    value the slider cannot show is a ``ValueError`` (ipywidgets would move it to the nearest end without a word)."""
    step = schedule.T // (n + 1)
    hi = step * n
    if t0 is not None:
        schedule.check_t0(t0)
        if not step <= t0 <= hi:
            raise ValueError(
                f"t0={t0} is outside the control's range [{step}, {hi}] (steps of {step}): start inside it"
            )
    return _int_slider(t0 if t0 is not None else hi // 2 // step * step, step, hi, step, "t0")


def noising_control(explorer: NoisingExplorer, *, n_show: int = 6) -> Control:
    """A t slider for :class:`NoisingExplorer`: how much of x0 is left at t (sqrt(alpha_bar_t) in the title)."""
    T = explorer.schedule.T

    def draw(t: int):
        a = float(explorer.schedule.alpha_bar[t])
        return show_images(
            {"x_0": explorer.x0[:n_show], f"x_t, t = {t}": explorer(t)[:n_show].clamp(-1, 1)},
            title=f"t = {t}: x_t = {a**0.5:.3f} x_0 + {(1 - a) ** 0.5:.3f} w",
        )

    return control(draw, {"t": _int_slider(T // 2, 1, T - 1, 1, "t")})


def reconstruction_control(explorer: ReconstructionExplorer, *, n_show: int = 6) -> Control:
    """Sliders for t0, S_for, S_gen that redraw the reconstruction of ``explorer``'s first ``n_show`` images (Eq. 12
    then 13), with their MAE in the title."""

    def draw(t0: int, S_for: int, S_gen: int):
        rec, shown = explorer(t0, S_for, S_gen)[0][:n_show], explorer.x0[:n_show]
        mae = ((rec - shown).abs() / 2).mean().item()
        return show_images(
            {"input": shown, "reconstruction": rec},
            title=f"t0 = {t0}, (S_for, S_gen) = ({S_for}, {S_gen}): MAE {mae:.4f}",
        )

    return control(
        draw,
        {
            "t0": _t0_slider(explorer.model.schedule),
            "S_for": _int_slider(40, 2, 200, 2, "S_for"),
            "S_gen": _int_slider(6, 2, 200, 2, "S_gen"),
        },
    )


def eta_control(explorer: EtaExplorer, *, sources=None) -> Control:
    """eta and seed sliders for :class:`EtaExplorer`: eta = 0 is DDIM (every seed alike); as eta grows the fresh
    noise sigma_t(eta) z of Eq. 5 moves the images further from the DDIM ones (the distance in the title)."""

    def draw(eta: float, seed: int):
        rows = {} if sources is None else {"source": sources}
        rows["eta = 0 (DDIM)"] = explorer(0.0)
        rows[f"eta = {eta:.1f}, seed {seed}"] = explorer(eta, seed)
        return show_images(
            rows, title=f"eta = {eta:.1f}, seed = {seed}: mean |x - x_DDIM| = {explorer.distance(eta, seed):.3f}"
        )

    return control(draw, {"eta": _float_slider(0.5, 0.0, 1.0, 0.1, "eta"), "seed": _int_slider(0, 0, 9, 1, "seed")})


def edit_t0_control(explorer: EditExplorer, *, t0: int | None = None, label: str = "edit") -> Control:
    """A t0 slider for :class:`EditExplorer`: small t0 keeps the source (faithful), large t0 lets the fine-tuned
    model change more (the edit's MAE to the source, in the title, grows with t0)."""

    def draw(t0: int):
        e = explorer(t0)
        return show_images(
            {"source": explorer.x0, "reconstruction": e.reconstruction, label: e.edit},
            title=f"t0 = {t0}: MAE(edit, source) = {e.mae:.3f}",
        )

    return control(draw, {"t0": _t0_slider(explorer.base.schedule, t0)})


def stroke_t0_control(explorer: StrokeExplorer, *, t0: int | None = None) -> Control:
    """A t0 slider for :class:`StrokeExplorer`: small t0 keeps the strokes (faithful, unrealistic), large t0 gives
    a realistic image that forgets them (MAE to the strokes in the title)."""

    def draw(t0: int):
        x = explorer(t0)
        mae = ((x - explorer.strokes).abs() / 2).mean().item()
        return show_images(
            {"strokes": explorer.strokes, "generated": x}, title=f"t0 = {t0}: MAE(generated, strokes) = {mae:.3f}"
        )

    return control(draw, {"t0": _t0_slider(explorer.base.schedule, t0)})


def switch_control(explorer: SwitchExplorer, *, names: tuple[str, str] = ("first", "second"), sources=None) -> Control:
    """A switch-time slider for :class:`SwitchExplorer`: gamma(t) gives the first model the steps t >= t_switch
    (the coarse layout, decided early) and the second the rest (the details)."""
    t0 = explorer.t0

    def draw(t_switch: int):
        rows = {} if sources is None else {"source": sources}
        rows[f"{names[0]} until t = {t_switch}, then {names[1]}"] = explorer(t_switch)
        return show_images(rows, title=f"gamma(t) = (1, 0) for t >= {t_switch}, (0, 1) below")

    step = max(1, t0 // 10)
    return control(draw, {"t_switch": _int_slider(t0 // 2 // step * step, 0, t0 + step, step, "t_switch")})


def combination_control(explorer: CombinationExplorer, *, sources=None) -> Control:
    """One gamma slider per fine-tuned model (the pretrained model gets 1 - their sum)."""

    def draw(**weights: float):
        rows = {} if sources is None else {"source": sources}
        rows["combined"] = explorer(weights)
        rest = 1.0 - sum(weights.values())
        title = ", ".join(f"gamma[{k}] = {v:.2f}" for k, v in weights.items()) + f", gamma[pretrained] = {rest:.2f}"
        if rest < 0:  # the sliders' weights sum past 1: the pretrained model's weight is negative
            title += " (extrapolation: a weight outside [0, 1], beyond the paper's Alg. 5)"
        return show_images(rows, title=title)

    return control(draw, {n: _float_slider(0.5 / len(explorer.tuned), 0.0, 1.0, 0.1, n) for n in explorer.tuned})


def stochastic_edit_control(explorer: StochasticEditExplorer, *, sources=None) -> Control:
    """eta and seed sliders: eta = 0 is the deterministic edit (every seed alike); eta > 0 varies with the seed."""

    def draw(eta: float, seed: int):
        rows = {} if sources is None else {"source": sources}
        rows[f"eta = {eta:.1f}, seed {seed}"] = explorer(eta, seed)
        return show_images(rows, title=f"stochastic manipulation: eta = {eta:.1f}, seed = {seed}")

    return control(draw, {"eta": _float_slider(0.0, 0.0, 1.0, 0.1, "eta"), "seed": _int_slider(0, 0, 9, 1, "seed")})


class FinetuneMonitor:
    """A :func:`dclip.finetune.finetune` callback: records the loss terms, and every ``every`` steps generates
    the edits of a few fixed latents ``x_t0`` with the model being trained; ``live=True`` redraws them."""

    def __init__(
        self,
        x_t0: torch.Tensor,
        t0: int,
        S_gen: int = 6,
        every: int = 8,
        live: bool = True,
        keep_every: int | None = None,
    ):
        self.x_t0, self.t0, self.S_gen, self.every, self.live = x_t0, t0, S_gen, every, live
        self.keep_every = keep_every
        self.history: list[dict] = []
        self.previews: dict[str, torch.Tensor] = {}
        self.snapshots: dict[int, DiffusionModel] = {}  # iteration -> copy of the model (every keep_every steps)

    def __call__(self, iteration: int, entry: dict, tuned: DiffusionModel) -> None:
        self.history.append(entry)
        if self.keep_every and iteration % self.keep_every == 0:
            self.snapshots[iteration] = copy.deepcopy(tuned).eval().requires_grad_(False)
        if iteration == 1 or iteration % self.every == 0:
            with torch.no_grad():
                x = ddim_generate(tuned, self.x_t0, tuned.schedule, t0=self.t0, S_gen=self.S_gen)
            self.previews[f"step {iteration}"] = x.clamp(-1, 1).cpu()
            if self.live:
                import matplotlib.pyplot as plt
                from IPython.display import clear_output

                clear_output(wait=True)
                self.figure()
                plt.show()

    def figure(self):
        """The loss curves so far and the preview grid (one row per recorded step)."""
        curves = {k: [h[k] for h in self.history] for k in ("loss", "direction", "identity")}
        plot_curves(curves, title="Fine-tuning loss (Eq. 10)", xlabel="optimizer step", ylabel="loss")
        return show_images(self.previews, title="Edits of fixed latents while fine-tuning")
