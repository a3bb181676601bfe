"""The ermongroup/ddim checkpoint layout (SDEdit, DiffusionCLIP) to diffusers' ``UNet2DModel`` and back.

The authors' released CelebA-HQ model and their fine-tuned checkpoints use ddim's key names; the conversion is a
renaming (METHOD.md, "Where the authors' code differs") plus 1x1 attention convolutions that become linears.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

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
