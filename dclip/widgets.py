"""ipywidgets controls for the notebooks. Each control's callback is a plain function, tested in the package;
latents are cached, so moving a slider regenerates instead of recomputing everything."""

from __future__ import annotations

import torch

from dclip.ddim import ddim_generate, ddim_invert
from dclip.models import DiffusionModel


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

    from dclip.plotting import show_images

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
