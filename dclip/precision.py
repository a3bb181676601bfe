"""The precision of the forward passes on a GPU: one choice for fine-tuning, editing and the real world."""

from __future__ import annotations

import torch

PRECISIONS = {"auto": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype of the forward passes: float32 off CUDA; on CUDA "auto" is bf16 where the GPU supports it (Ampere
    and later) and fp16 elsewhere (a T4), which :func:`dclip.finetune.finetune` pairs with loss scaling."""
    if device.type != "cuda":
        return torch.float32
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16
    return PRECISIONS[precision]
