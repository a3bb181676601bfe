"""The chapters' explorers: plain callables that compute only the images a control shows, caching what a slider
revisits (the forward process at t, reconstruction and edits at t0, eta, strokes, gamma switches and weights).

Each is tested in the package like any function; :mod:`dclip.widgets` puts sliders and a figure around it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from dclip.ddim import ddim_generate, ddim_invert
from dclip.ddpm import q_sample
from dclip.editing import combine, manipulate, to_pretrained_domain
from dclip.models import DiffusionModel
from dclip.schedule import Schedule


class NoisingExplorer:
    """The forward process (Eq. 1) of images ``x0`` at any t, with the same noise w for every t."""

    def __init__(self, schedule: Schedule, x0: torch.Tensor, *, seed: int = 0):
        self.schedule, self.x0 = schedule, x0
        self.noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)).to(x0.device, x0.dtype)

    def __call__(self, t: int) -> torch.Tensor:
        return q_sample(self.x0, t, self.schedule, noise=self.noise)


class ReconstructionExplorer:
    """Invert-and-regenerate ``x0`` for any (t0, S_for, S_gen), caching the latents of each (t0, S_for) and each
    round trip. :meth:`prepare` fills a whole table at once: the latents of several S_for at one t0 are generated
    with one S_gen on the same time grid, so they run as one batch (fewer, larger UNet calls)."""

    def __init__(self, model: DiffusionModel, x0: torch.Tensor):
        model.check_images(x0)
        self.model, self.x0 = model, x0.to(model.device)
        self._latents: dict[tuple[int, int], torch.Tensor] = {}
        self._round_trips: dict[tuple[int, int, int], tuple[torch.Tensor, float]] = {}

    def latent(self, t0: int, S_for: int) -> torch.Tensor:
        if (t0, S_for) not in self._latents:
            with torch.no_grad():
                self._latents[(t0, S_for)] = ddim_invert(self.model, self.x0, self.model.schedule, t0=t0, S_for=S_for)
        return self._latents[(t0, S_for)]

    def prepare(self, t0s: Sequence[int], S_fors: Sequence[int], S_gens: Sequence[int]) -> None:
        """Compute every round trip of ``t0s x S_fors x S_gens`` not cached yet: Eq. 12 once per (t0, S_for), then
        Eq. 13 once per (t0, S_gen) on the latents of all its S_for together."""
        n = len(self.x0)
        for t0 in t0s:
            for S_gen in S_gens:
                todo = [S_for for S_for in S_fors if (t0, S_for, S_gen) not in self._round_trips]
                if not todo:
                    continue
                latents = torch.cat([self.latent(t0, S_for) for S_for in todo])
                with torch.no_grad():
                    rec = ddim_generate(self.model, latents, self.model.schedule, t0=t0, S_gen=S_gen).clamp(-1, 1)
                for S_for, r in zip(todo, rec.split(n)):
                    self._round_trips[(t0, S_for, S_gen)] = r, ((r - self.x0).abs() / 2).mean().item()

    def __call__(self, t0: int, S_for: int, S_gen: int) -> tuple[torch.Tensor, float]:
        """The reconstruction and its MAE (images in [0, 1])."""
        self.prepare([t0], [S_for], [S_gen])
        return self._round_trips[(t0, S_for, S_gen)]


class EtaExplorer:
    """Generation with the generalized step (Eq. 5) from fixed ``x_t`` at time ``t`` in ``S`` steps, for any
    ``eta`` (the noise scale sigma_t(eta); 0 is DDIM, Eq. 13) and seed of the fresh noise z. Cached per (eta, seed);
    the eta = 0 generation is the reference that :meth:`distance` measures from."""

    def __init__(self, model: DiffusionModel, x_t: torch.Tensor, t: int, *, S: int = 20, clip_x0: bool = False):
        model.schedule.check_t0(t)
        self.model, self.x_t, self.t, self.S, self.clip_x0 = model, x_t.to(model.device), t, S, clip_x0
        self._cache: dict[tuple[float, int], torch.Tensor] = {}

    def __call__(self, eta: float, seed: int = 0) -> torch.Tensor:
        key = (round(float(eta), 6), int(seed)) if eta > 0 else (0.0, 0)  # eta = 0 draws no noise: one result
        if key not in self._cache:
            g = torch.Generator().manual_seed(key[1])
            with torch.no_grad():
                x = ddim_generate(
                    self.model,
                    self.x_t,
                    self.model.schedule,
                    t0=self.t,
                    S_gen=self.S,
                    eta=key[0],
                    clip_x0=self.clip_x0,
                    generator=g,
                )
            self._cache[key] = x.clamp(-1, 1)
        return self._cache[key]

    def distance(self, eta: float, seed: int = 0) -> float:
        """Mean |x(eta, seed) - x(eta = 0)| in [0, 1] pixel units: how far the fresh noise moved the images."""
        return ((self(eta, seed) - self(0.0)).abs() / 2).mean().item()


@dataclass
class EditAtT0:
    """Alg. 3 at one return step t0: the pretrained model's reconstruction, the edit, and its MAE to the source."""

    t0: int
    reconstruction: torch.Tensor
    edit: torch.Tensor
    mae: float


class EditExplorer:
    """Alg. 3 at any return step t0: invert ``x0`` with ``base`` (S_for steps), generate with ``base`` (the
    reconstruction) and with ``tuned`` (the edit). One inversion per t0, cached; draws only ``x0``."""

    def __init__(
        self, base: DiffusionModel, tuned: DiffusionModel, x0: torch.Tensor, *, S_for: int = 40, S_gen: int = 6
    ):
        base.check_images(x0)
        self.base, self.tuned, self.x0, self.S_for, self.S_gen = base, tuned, x0.to(base.device), S_for, S_gen
        self._cache: dict[int, EditAtT0] = {}

    def __call__(self, t0: int) -> EditAtT0:
        if t0 not in self._cache:
            with torch.no_grad():
                x_t0 = ddim_invert(self.base, self.x0, self.base.schedule, t0=t0, S_for=self.S_for)
                rec = ddim_generate(self.base, x_t0, self.base.schedule, t0=t0, S_gen=self.S_gen).clamp(-1, 1)
                edit = manipulate(self.base, self.tuned, None, t0=t0, S_gen=self.S_gen, x_t0=x_t0).clamp(-1, 1)
            self._cache[t0] = EditAtT0(t0, rec, edit, ((edit - self.x0).abs() / 2).mean().item())
        return self._cache[t0]


class StrokeExplorer:
    """Alg. 4's first part at any t0: DDPM forward noising of ``strokes`` to t0 (Eq. 1, seeded) and DDIM
    generation with the pretrained model (Eq. 13). Cached per t0."""

    def __init__(self, base: DiffusionModel, strokes: torch.Tensor, *, S_gen: int = 40, seed: int = 0):
        base.check_images(strokes)
        self.base, self.strokes, self.S_gen, self.seed = base, strokes.to(base.device), S_gen, seed
        self._cache: dict[int, torch.Tensor] = {}

    def __call__(self, t0: int) -> torch.Tensor:
        if t0 not in self._cache:
            g = torch.Generator().manual_seed(self.seed)
            with torch.no_grad():
                self._cache[t0] = to_pretrained_domain(self.base, self.strokes, t0=t0, S_gen=self.S_gen, generator=g)
        return self._cache[t0]


class SwitchExplorer:
    """Alg. 5 with a time-dependent gamma(t): ``first`` predicts the noise while t >= t_switch, ``second`` after
    (Eq. 14 with weights (1, 0) then (0, 1)). t_switch = 0 is all ``first``; t_switch > t0 all ``second``."""

    def __init__(
        self,
        base: DiffusionModel,
        first: DiffusionModel,
        second: DiffusionModel,
        x_t0: torch.Tensor,
        t0: int,
        *,
        S_gen: int = 6,
    ):
        self.base, self.first, self.second, self.x_t0, self.t0, self.S_gen = base, first, second, x_t0, t0, S_gen
        self._cache: dict[int, torch.Tensor] = {}

    def gammas(self, t_switch: int) -> Callable[[int], list[float]]:
        return lambda t: [1.0, 0.0] if t >= t_switch else [0.0, 1.0]

    def __call__(self, t_switch: int) -> torch.Tensor:
        if t_switch not in self._cache:
            with torch.no_grad():
                x = combine(
                    self.base,
                    [self.first, self.second],
                    self.gammas(t_switch),
                    None,
                    t0=self.t0,
                    S_gen=self.S_gen,
                    x_t0=self.x_t0,
                )
            self._cache[t_switch] = x.clamp(-1, 1)
        return self._cache[t_switch]


class CombinationExplorer:
    """Noise combination (Alg. 5, Eq. 14) of the pretrained model and named fine-tuned models on fixed latents.

    ``explorer({"angry": 0.5, "red hair": 0.5})`` gives each fine-tuned model its weight and the pretrained model
    the rest (``1 - sum``), so the gammas always sum to one; all zeros is the plain reconstruction."""

    def __init__(
        self, base: DiffusionModel, tuned: dict[str, DiffusionModel], x_t0: torch.Tensor, t0: int, S_gen: int = 6
    ):
        self.base, self.tuned, self.x_t0, self.t0, self.S_gen = base, tuned, x_t0, t0, S_gen

    def __call__(self, weights: dict[str, float]) -> torch.Tensor:
        unknown = set(weights) - set(self.tuned)
        if unknown:
            raise ValueError(f"no fine-tuned model named {sorted(unknown)}; known: {sorted(self.tuned)}")
        names = [n for n in self.tuned if weights.get(n, 0.0) != 0.0]
        gammas = [1.0 - sum(weights[n] for n in names)] + [weights[n] for n in names]
        models = [self.base] + [self.tuned[n] for n in names]
        with torch.no_grad():
            return combine(self.base, models, gammas, None, self.t0, S_gen=self.S_gen, x_t0=self.x_t0).clamp(-1, 1)


class StochasticEditExplorer:
    """Stochastic manipulation (App. F.5): Alg. 3 generating with ``eta`` > 0 (Eq. 5) from a seeded generator."""

    def __init__(self, base: DiffusionModel, tuned: DiffusionModel, x_t0: torch.Tensor, t0: int, *, S_gen: int = 6):
        self.base, self.tuned, self.x_t0, self.t0, self.S_gen = base, tuned, x_t0, t0, S_gen

    def __call__(self, eta: float, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            x = manipulate(
                self.base, self.tuned, None, t0=self.t0, S_gen=self.S_gen, x_t0=self.x_t0, eta=eta, generator=g
            )
        return x.clamp(-1, 1)
