"""The real world: a pretrained 256x256 DDPM (CelebA-HQ, or LSUN church / bedroom / cat), OpenAI's CLIP, ArcFace.

Training images need no dataset download: the N images of Alg. 1 are samples of the pretrained DDPM itself
(seeded, x0 clipped, cached on disk), which are in-domain by construction; test images are other samples
(disjoint seeds) or the user's own photos (:meth:`RealWorld.photos`). The smoke world runs exactly this code on a
small random UNet of the same architecture at 32x32 with the offline world's CLIP, so CI executes every chapter's
real path.
"""

from __future__ import annotations

import hashlib
import warnings
from functools import cached_property
from pathlib import Path

import torch

from dclip.cache import save_tensors_atomic
from dclip.ddim import ddim_generate
from dclip.hashing import fingerprint
from dclip.losses import IdentityTerm
from dclip.models import DIFFUSION_MODELS, DiffusionModel
from dclip.progress import progress_bar
from dclip.schedule import check_int
from dclip.store import Request, cached
from dclip.worlds import World

#: Seeds of the sampled images: image i of the training set is x_T drawn with seed TRAIN_SEED + i, image i of the
#: test set with TEST_SEED + i; the ranges never meet for fewer than 10**6 images.
TRAIN_SEED, TEST_SEED = 0, 1_000_000


def sample_images(
    model: DiffusionModel,
    n: int,
    *,
    seed: int,
    steps: int = 50,
    batch_size: int = 8,
    cache_dir: str | Path | None = "default",
    progress: bool = True,
) -> torch.Tensor:
    """``n`` samples of ``model`` (DDIM from x_T = N(0, I) at t = T - 1, ``steps`` steps, x0 clipped), image i drawn
    from seed ``seed + i``: the same seed gives the same image whatever ``n``. [-1, 1], (n, 3, S, S), on the CPU.

    Cached (:mod:`dclip.cache`, kind ``samples``; ``cache_dir`` another folder, None no cache) by the model's
    weights, seeds and steps; a damaged or mismatched entry is sampled again with a warning naming the file.
    """
    check_int(n, "n", minimum=1)
    check_int(steps, "steps", minimum=1)
    shape = (n, 3, model.image_size, model.image_size)

    def sample() -> torch.Tensor:
        size = (3, model.image_size, model.image_size)
        noise = torch.stack([torch.randn(size, generator=torch.Generator().manual_seed(seed + i)) for i in range(n)])
        chunks = []
        with torch.no_grad():
            for x_T in progress_bar(
                noise.split(batch_size), show=progress, desc=f"sampling {n} images of {model.name}"
            ):
                x = ddim_generate(
                    model, x_T.to(model.device), model.schedule, t0=model.schedule.T - 1, S_gen=steps, clip_x0=True
                )
                chunks.append(x.clamp(-1, 1).float().cpu())
        return torch.cat(chunks)

    if cache_dir is None:
        return sample()
    request = {"model": fingerprint(model), "seed": seed, "n": n, "steps": steps}
    key = hashlib.sha1(repr(sorted(request.items())).encode()).hexdigest()[:16]

    def write(path: Path, images: torch.Tensor) -> None:
        if torch.isfinite(images).all():  # non-finite samples are returned, never cached
            save_tensors_atomic(path, {"images": images}, metadata=request)

    return cached(
        "samples",
        Request(
            name=f"{model.name.replace('/', '_')}-seed{seed}-n{n}-S{steps}-{key}.safetensors",
            meta=request,
            write=write,
            read=lambda tensors, _: tensors["images"],
            save_hint="save them with dclip.save_images(images, folder)",
            check=lambda t, m: None if tuple(t["images"].shape) == shape else f"holds {tuple(t['images'].shape)}",
        ),
        sample,
        cache_dir=cache_dir,
    )


class RealWorld(World):
    """A pretrained 256x256 DDPM with OpenAI's CLIP ViT-B/16: the paper's setting (Table 5, Sec. 4)."""

    _identity_missing = _lpips_missing = ""
    why_not = {
        "success": "no attribute classifier for real images here (the paper asked human raters)",
        "others_kept": "no attribute classifier for real images here (the paper asked human raters)",
        "segmentation_consistency": "no face parser for real images here (the paper used one, App. D.3)",
    }

    @cached_property
    def model(self) -> DiffusionModel:
        """The pretrained eps_theta; on CUDA its UNet runs under autocast (fp16 on a T4, bf16 where supported) for
        inversion and generation too, as fine-tuning does (:func:`dclip.precision.autocast_dtype`)."""
        from dclip.models import load_diffusion
        from dclip.precision import autocast_dtype

        model = load_diffusion(self.diffusion, device=self.device)
        if model.device.type == "cuda":
            model.autocast_dtype = autocast_dtype("auto", model.device)
        return model

    @property
    def domain(self) -> str:
        return DIFFUSION_MODELS[self.diffusion]["domain"]

    @property
    def is_face(self) -> bool:
        return self.domain == "human face"

    # --- identity (Eq. 11) -------------------------------------------------------------------------------------
    def _load_identity(self) -> IdentityTerm | None:
        if not self.is_face:
            return None
        from dclip.identity import IdentityUnavailable, arcface_identity

        try:
            return arcface_identity(device=self.device)
        except IdentityUnavailable as e:
            warnings.warn(f"lambda_ID is 0 on the {self.name} world: {e}", stacklevel=4)  # the caller of .identity
            self._identity_missing = str(e)
            return None

    @property
    def identity_note(self) -> str:
        if not self.is_face:
            return f"no face-identity term for {self.domain} images: lambda_ID is 0, as in the paper's Table 5"
        if self.identity is None:
            return f"lambda_ID is 0 here: {self._identity_missing}"
        return f"identity term: 1 - cos of {self.identity.cache_name} embeddings (the paper's ArcFace)"

    # --- what can be measured ----------------------------------------------------------------------------------
    @cached_property
    def _lpips(self):
        from dclip.metrics import MetricUnavailable, lpips_model

        try:
            return lpips_model(self.device)
        except MetricUnavailable as e:
            self._lpips_missing = str(e)
            return None

    @property
    def measures(self) -> tuple[str, ...]:
        have = {"s_dir", "ssim", "identity" if self.identity is not None else "", "lpips" if self._lpips else ""}
        return tuple(k for k in ("s_dir", "identity", "lpips", "ssim") if k in have)

    def unmeasured(self) -> dict[str, str]:
        out = super().unmeasured()
        if "identity" in out:
            out["identity"] = self.identity_note
        if "lpips" in out:
            out["lpips"] = self._lpips_missing
        return out

    def _change_metrics(self, source: torch.Tensor, edited: torch.Tensor) -> dict[str, float]:
        from dclip.metrics import ssim

        out = {"ssim": ssim(source, edited)}
        if self._lpips is not None:
            with torch.no_grad():
                out["lpips"] = self._lpips(source.float().clamp(-1, 1), edited.float().clamp(-1, 1)).mean().item()
        return out

    # --- images ------------------------------------------------------------------------------------------------
    def _training_images(self, n: int | None = None) -> torch.Tensor:
        """N samples of the pretrained DDPM (seeds TRAIN_SEED + i), in-domain by construction (Alg. 1, step 1)."""
        return self._samples(n, TRAIN_SEED)

    def _samples(self, n: int, seed: int) -> torch.Tensor:
        return sample_images(self.model, n, seed=seed, steps=self.settings.sample_steps)

    def _test_images(self, n: int, *, neutral_for: str | None = None) -> torch.Tensor:
        """Other samples of the DDPM (seeds TEST_SEED + i), never training images; for your own photos use
        :meth:`photos`. ``neutral_for`` is accepted for the API's sake: a real world cannot tell what a face shows."""
        return self._samples(n, TEST_SEED)

    def photos(self, sources, *, align: bool = False) -> torch.Tensor:
        """Your own images (paths, a folder, PIL images or arrays) at this world's size; ``align=True`` aligns
        faces as FFHQ / CelebA-HQ were (:func:`dclip.align.align_face`, needs the ``faces`` extra)."""
        from dclip.images import load_image

        if align:
            from dclip.align import align_faces

            return align_faces(sources, size=self.image_size, device=self.device)
        return load_image(sources, self.image_size)

    def _unseen_domain_images(self, n: int) -> torch.Tensor:
        """Photographs from outside the model's domain (scikit-image's astronaut, cat and coffee, cycled)."""
        from dclip.images import load_image, sample_photos

        photos = list(sample_photos().values())
        return load_image([photos[i % len(photos)] for i in range(n)], self.image_size)

    def _stroke_images(self, n: int, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Block-colour "stroke paintings" (:func:`dclip.images.stroke_painting`) of test samples, and those samples."""
        from dclip.images import stroke_painting

        depicted = self._samples(n, TEST_SEED + 500_000 + 1000 * seed)
        return stroke_painting(depicted, blocks=min(16, self.image_size // 2)), depicted


class SmokeWorld(RealWorld):
    """The real world's code on a small random UNet of the real architecture (``smoke-celeba-hq``, 32x32) with the
    offline world's CLIP and a small random face recognizer: every chapter's real path, fast enough for CI. Its
    images are noise-like samples and its numbers mean nothing; it exists to run the plumbing."""

    @property
    def domain(self) -> str:
        return "human face"  # the face plumbing (identity term) runs too

    def _load_identity(self) -> IdentityTerm | None:
        from dclip.identity import ArcFaceIdentity, random_backbone

        return ArcFaceIdentity(random_backbone(), name="random-recognizer", input_size=32).to(self.device)

    @property
    def identity_note(self) -> str:
        return "identity term: the ArcFace wrapper around a small random recognizer (the smoke world's stand-in)"
