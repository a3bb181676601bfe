"""The diffusion model zoo: one way in, ``load_diffusion(name)``, for the real 256x256 DDPMs and the tiny world.

Names and their sources are data (``configs/diffusion_models.json``). A name may also be a local
folder in diffusers layout, or a checkpoint file in the ermongroup/ddim layout (the authors' released
CelebA-HQ model and their fine-tuned checkpoints), converted on load into diffusers' ``UNet2DModel``.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import socket
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from torch import nn

from dclip.budget import record
from dclip.schedule import Schedule

CONFIGS = Path(__file__).parent / "configs"
DIFFUSION_MODELS: dict[str, dict] = json.loads((CONFIGS / "diffusion_models.json").read_text())


class ModelNotAvailableError(OSError):
    """Weights that cannot be found locally nor downloaded; the message says where to get them."""


class DiffusionModel(nn.Module):
    """A noise predictor ``eps_theta(x_t, t)`` with its schedule and image size: what :mod:`dclip.ddim` takes.

    ``model(x, t)`` with ``x`` (N, 3, H, W) and ``t`` a (N,) long tensor returns eps (N, 3, H, W).
    """

    def __init__(self, unet: nn.Module, schedule: Schedule, image_size: int, name: str):
        super().__init__()
        self.unet, self.schedule, self.image_size, self.name = unet, schedule, image_size, name
        #: run the UNet under autocast in this dtype (fp16 on a T4, bf16 on newer GPUs); None: the weights' dtype
        self.autocast_dtype: torch.dtype | None = None

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        dtype = next(self.unet.parameters()).dtype
        count_backward = record(x)  # before the call: a checkpoint's recomputation may stop inside the UNet
        # no autocast block at all when unset: a disabled one would switch off an enclosing autocast (fine-tuning's)
        context = nullcontext() if self.autocast_dtype is None else torch.autocast(x.device.type, self.autocast_dtype)
        with context:
            eps = self.unet(x.to(dtype), t).sample.to(x.dtype)
        count_backward(eps)
        return eps

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def check_images(self, x: torch.Tensor) -> None:
        """Raise a clear error unless ``x`` is a batch of images of this model's size in [-1, 1]."""
        from dclip.ddim import check_image

        check_image(x)
        if tuple(x.shape[1:]) != (3, self.image_size, self.image_size):
            raise ValueError(
                f"model {self.name!r} takes (N, 3, {self.image_size}, {self.image_size}) images, got "
                f"{tuple(x.shape)}; resize with dclip.load_image(path, size={self.image_size})"
            )


def default_device() -> torch.device:
    """CUDA if present, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers within ``timeout`` seconds (False when HF_HUB_OFFLINE is set)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextmanager
def offline_unless_reachable():
    """Within this block the Hugging Face client works from its cache alone when the hub cannot be reached,
    so a missing file fails at once instead of after a minute of retries."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = before or not hub_reachable()
    try:
        yield constants.HF_HUB_OFFLINE
    finally:
        constants.HF_HUB_OFFLINE = before


def hub_cache() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _not_available(name: str, repo: str, detail: str) -> ModelNotAvailableError:
    return ModelNotAvailableError(
        f"cannot load model {name!r}: the weights of hub repo {repo!r} are not in the Hugging Face cache "
        f"({hub_cache()}) and the hub cannot be reached ({detail}). To fix: on a machine with internet run "
        f"`huggingface-cli download {repo}` and copy the cache, or pass a local folder or checkpoint path as the "
        f"name; or use the offline tiny world: load_diffusion('tinyfaces'), or set DCLIP_WORLD=tiny."
    )


def _hub_file(name: str, repo: str, filename: str) -> str:
    """Path of ``filename`` of hub ``repo``, from the cache or (if reachable) downloaded."""
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(repo, filename, local_files_only=True)
    except Exception:  # not cached: fall through to a download, if the hub answers
        pass
    if not hub_reachable():
        raise _not_available(name, repo, "offline")
    try:
        return hf_hub_download(repo, filename)
    except Exception as e:
        raise _not_available(name, repo, f"{type(e).__name__}: {e}") from e


def _unet_from_pretrained(name: str, source: str):
    """diffusers' ``UNet2DModel.from_pretrained`` from a local folder, the cache, or the hub."""
    from diffusers import UNet2DModel

    if Path(source).is_dir():
        sub = "unet" if (Path(source) / "unet" / "config.json").exists() else None
        return UNet2DModel.from_pretrained(source, subfolder=sub)
    for local in (True, False):
        if not local and not hub_reachable():
            raise _not_available(name, source, "offline")
        for sub in (None, "unet"):
            try:
                return UNet2DModel.from_pretrained(source, subfolder=sub, local_files_only=local)
            except OSError as e:
                error = e
    raise _not_available(name, source, f"{type(error).__name__}: {error}")


# --- the ermongroup/ddim checkpoint layout (SDEdit / DiffusionCLIP) -> diffusers UNet2DModel -------------

_N_LEVELS = 6  # ch_mult (1, 1, 2, 2, 4, 4) of the 256x256 models


def _key_pairs(n_levels: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(ddim, diffusers) key pieces: prefixes, then infixes (METHOD.md, "Where the authors' code differs").

    ddim's ``up`` list is indexed by resolution level (``up.0`` is the last applied), diffusers' ``up_blocks`` in
    the order they run, so ``up.i`` is ``up_blocks.(n_levels - 1 - i)``.
    """
    prefixes = [
        ("temb.dense.0.", "time_embedding.linear_1."),
        ("temb.dense.1.", "time_embedding.linear_2."),
        ("norm_out.", "conv_norm_out."),
        ("mid.block_1.", "mid_block.resnets.0."),
        ("mid.block_2.", "mid_block.resnets.1."),
        ("mid.attn_1.", "mid_block.attentions.0."),
    ]
    for i in range(n_levels):
        j = n_levels - 1 - i
        prefixes += [
            (f"down.{i}.block.", f"down_blocks.{i}.resnets."),
            (f"down.{i}.attn.", f"down_blocks.{i}.attentions."),
            (f"down.{i}.downsample.", f"down_blocks.{i}.downsamplers.0."),
            (f"up.{i}.block.", f"up_blocks.{j}.resnets."),
            (f"up.{i}.attn.", f"up_blocks.{j}.attentions."),
            (f"up.{i}.upsample.", f"up_blocks.{j}.upsamplers.0."),
        ]
    infixes = [
        (".nin_shortcut.", ".conv_shortcut."),
        (".temb_proj.", ".time_emb_proj."),
        (".norm.", ".group_norm."),
        (".q.", ".to_q."),
        (".k.", ".to_k."),
        (".v.", ".to_v."),
        (".proj_out.", ".to_out.0."),
    ]
    return prefixes, infixes


def _rename(key: str, n_levels: int, to_diffusers: bool) -> str:
    src, dst = (0, 1) if to_diffusers else (1, 0)
    prefixes, infixes = _key_pairs(n_levels)
    for pair in prefixes:
        if key.startswith(pair[src]):
            key = pair[dst] + key[len(pair[src]) :]
            break
    for pair in infixes:
        key = key.replace(pair[src], pair[dst])
    return key


_ATTN_LINEAR = re.compile(r"attentions\.\d+\.(to_q|to_k|to_v|to_out\.0)\.weight$")


def ddim_to_diffusers(state: dict[str, torch.Tensor], n_levels: int = _N_LEVELS) -> dict[str, torch.Tensor]:
    """Convert an ermongroup/ddim-layout state dict into UNet2DModel keys (1x1 attention convs become linears)."""
    out = {}
    for key, value in state.items():
        key = _rename(key.removeprefix("module."), n_levels, to_diffusers=True)
        out[key] = value[:, :, 0, 0] if _ATTN_LINEAR.search(key) and value.dim() == 4 else value
    return out


def diffusers_to_ddim(state: dict[str, torch.Tensor], n_levels: int = _N_LEVELS) -> dict[str, torch.Tensor]:
    """The inverse of :func:`ddim_to_diffusers`: UNet2DModel keys to the ddim layout (linears become 1x1 convs)."""
    return {
        _rename(key, n_levels, to_diffusers=False): value[:, :, None, None] if _ATTN_LINEAR.search(key) else value
        for key, value in state.items()
    }


def _read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a .ckpt/.pth/.pt (plain, DataParallel 'module.' keys, or [state, ...]) or .safetensors file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, (list, tuple)):
        state = state[0]
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state


def unet_from_ddim_checkpoint(path: str | Path, config: dict):
    """A UNet2DModel of ``config`` with the weights of an ermongroup/ddim-layout checkpoint at ``path``."""
    from diffusers import UNet2DModel

    unet = UNet2DModel(**config)
    state = ddim_to_diffusers(_read_checkpoint(path), len(config["block_out_channels"]))
    try:
        missing, unexpected = unet.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shapes that do not fit
        missing, unexpected = [str(e).splitlines()[1].strip()], []
    if missing or unexpected:
        raise ValueError(
            f"{path} does not fit the {config['sample_size']}x{config['sample_size']} UNet: "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:3]}); is it a ddim-layout checkpoint of this architecture?"
        )
    return unet


def plugin(spec: str):
    """The object named by ``"package.module:attribute"``: how the zoo reaches models defined above it (the tiny
    world) without importing them."""
    module, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(module), attribute)


def load_diffusion(
    name: str, device: str | torch.device | None = None, dtype: torch.dtype | None = None, compile: bool = False
) -> DiffusionModel:
    """A pretrained DDPM by name, as a :class:`DiffusionModel` on ``device`` (default: CUDA, MPS, else CPU).

    Names: ``celeba-hq``, ``church``, ``bedroom``, ``cat`` (google/ddpm-*-256), ``celeba-hq-sdedit`` (the
    checkpoint the paper used), ``tinyfaces`` (the tiny world, from package data); or a local diffusers folder
    or a ddim-layout checkpoint file (256x256 CelebA-HQ architecture). ``dtype=torch.float16`` halves memory on
    a GPU; ``compile=True`` wraps the UNet in ``torch.compile`` (faster repeated calls after a slow first one).
    Raises :class:`ModelNotAvailableError`
    offline without cached weights, and ``ValueError`` for an unknown name.
    """
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    entry = DIFFUSION_MODELS.get(name)
    if entry is None and not Path(name).exists():
        raise ValueError(
            f"unknown diffusion model {name!r}: use one of {sorted(DIFFUSION_MODELS)}, "
            "a local diffusers folder, or a ddim-layout checkpoint file"
        )
    if entry is None:
        source = Path(name)
        unet = (
            _unet_from_pretrained(name, name)
            if source.is_dir()
            else unet_from_ddim_checkpoint(source, DIFFUSION_MODELS["celeba-hq-sdedit"]["unet"])
        )
        entry = {"schedule": DIFFUSION_MODELS["celeba-hq"]["schedule"]}
    elif entry["source"] == "plugin":
        unet = plugin(entry["unet"])()
    elif entry["source"] == "random":  # an architecture with seeded random weights (the smoke world)
        from diffusers import UNet2DModel

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(entry["seed"])
            unet = UNet2DModel(**entry["unet"])
    elif entry["source"] == "ddim-checkpoint":
        unet = unet_from_ddim_checkpoint(_hub_file(name, entry["repo"], entry["file"]), entry["unet"])
    else:
        unet = _unet_from_pretrained(name, entry["repo"])
    schedule = Schedule.linear(**entry["schedule"])
    model = DiffusionModel(unet, schedule, int(unet.config.sample_size), name)
    model.eval().requires_grad_(False)
    model = model.to(device=device or default_device(), dtype=dtype)
    if compile:
        model.unet = torch.compile(model.unet)
    return model
