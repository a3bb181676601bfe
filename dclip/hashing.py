"""Content hashes: which weights a cached result belongs to, and whether a file holds what it recorded."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch


def fingerprint(model: torch.nn.Module) -> str:
    """A short hash of a model's weights: which base model a latent or a fine-tuned checkpoint belongs to."""
    h = hashlib.sha1()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def tensor_checksum(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-1 of the names, dtypes, shapes and bytes of ``tensors``: what a cache entry's metadata records."""
    h = hashlib.sha1()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
