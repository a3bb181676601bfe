"""ipywidgets controls for the notebooks. Each control's callback is a plain function, tested in the package;
latents are cached, so moving a slider regenerates instead of recomputing everything."""

from __future__ import annotations

import copy

import torch

from dclip.ddim import ddim_generate, ddim_invert
from dclip.models import DiffusionModel
from dclip.plotting import plot_curves, show_images


class ReconstructionExplorer:
    """Invert-and-regenerate ``x0`` for any (t0, S_for, S_gen), caching the latents of each (t0, S_for)."""

    def __init__(self, model: DiffusionModel, x0: torch.Tensor):
        model.check_images(x0)
        self.model, self.x0 = model, x0.to(model.device)
        self._latents: dict[tuple[int, int], torch.Tensor] = {}

    def latent(self, t0: int, S_for: int) -> torch.Tensor:
        if (t0, S_for) not in self._latents:
            with torch.no_grad():
                self._latents[(t0, S_for)] = ddim_invert(self.model, self.x0, self.model.schedule, t0, S_for)
        return self._latents[(t0, S_for)]

    def __call__(self, t0: int, S_for: int, S_gen: int) -> tuple[torch.Tensor, float]:
        """The reconstruction and its MAE (images in [0, 1])."""
        with torch.no_grad():
            rec = ddim_generate(self.model, self.latent(t0, S_for), self.model.schedule, t0, S_gen).clamp(-1, 1)
        return rec, ((rec - self.x0).abs() / 2).mean().item()


def reconstruction_widget(explorer: ReconstructionExplorer, n_show: int = 6):
    """Sliders for t0, S_for, S_gen that redraw the reconstruction of ``explorer``'s images."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    def draw(t0: int, S_for: int, S_gen: int) -> None:
        rec, mae = explorer(t0, S_for, S_gen)
        show_images(
            {"input": explorer.x0[:n_show], "reconstruction": rec[:n_show]},
            title=f"t0={t0}, (S_for, S_gen)=({S_for}, {S_gen}): MAE {mae:.4f}",
        )
        plt.show()

    return w.interactive(
        draw,
        t0=w.IntSlider(500, 100, 900, 100, description="t0"),
        S_for=w.IntSlider(40, 2, 200, 2, description="S_for"),
        S_gen=w.IntSlider(6, 2, 100, 2, description="S_gen"),
    )


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
                x = ddim_generate(tuned, self.x_t0, tuned.schedule, self.t0, self.S_gen)
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


class CombinationExplorer:
    """Noise combination (Alg. 5, Eq. 14) of the pretrained model and named fine-tuned models on fixed latents.

    ``explorer({"angry": 0.5, "red hair": 0.5})`` gives each fine-tuned model its weight and the pretrained model
    the rest (``1 - sum``), so the gammas always sum to one; all zeros is the plain reconstruction."""

    def __init__(
        self, base: DiffusionModel, tuned: dict[str, DiffusionModel], x_t0: torch.Tensor, t0: int, S_gen: int = 6
    ):
        self.base, self.tuned, self.x_t0, self.t0, self.S_gen = base, tuned, x_t0, t0, S_gen

    def __call__(self, weights: dict[str, float]) -> torch.Tensor:
        from dclip.editing import combine

        unknown = set(weights) - set(self.tuned)
        if unknown:
            raise ValueError(f"no fine-tuned model named {sorted(unknown)}; known: {sorted(self.tuned)}")
        names = [n for n in self.tuned if weights.get(n, 0.0) != 0.0]
        gammas = [1.0 - sum(weights[n] for n in names)] + [weights[n] for n in names]
        models = [self.base] + [self.tuned[n] for n in names]
        with torch.no_grad():
            return combine(self.base, models, gammas, None, self.t0, S_gen=self.S_gen, x_t0=self.x_t0).clamp(-1, 1)


def combination_widget(explorer: CombinationExplorer, sources: torch.Tensor, n_show: int = 6):
    """One slider per fine-tuned model (its gamma); redraws the combined edits of ``explorer``'s latents."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    def draw(**weights: float) -> None:
        show_images(
            {"source": sources[:n_show], "combined": explorer(weights)[:n_show]},
            title=", ".join(f"gamma[{k}] = {v:.2f}" for k, v in weights.items()),
        )
        plt.show()

    sliders = {n: w.FloatSlider(0.5, min=0.0, max=1.0, step=0.1, description=n) for n in explorer.tuned}
    return w.interactive(draw, **sliders)
