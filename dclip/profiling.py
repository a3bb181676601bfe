"""Measuring what the fine-tuning algorithms cost: time and the memory held for the backward pass.

The paper's Alg. 1 needs 23 GB and its GPU-efficient Alg. 2 12 GB (256 x 256, V100): the difference is the
activations that Alg. 1 keeps through all S_gen reverse steps. :class:`ActivationMemory` counts exactly those,
the tensors autograd saves for backward (parameters excluded), on any device; on CUDA, :func:`measure` also reports
``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


class _Saved:
    """A tensor saved for backward; its bytes are released from the count when autograd drops it."""

    def __init__(self, meter: ActivationMemory, tensor: torch.Tensor):
        self.meter, self.tensor = meter, tensor
        self.key = (tensor.device, tensor.untyped_storage().data_ptr())
        meter._add(self.key, tensor.untyped_storage().nbytes())

    def __del__(self) -> None:
        self.meter._release(self.key)


class ActivationMemory:
    """Context manager: the peak bytes of tensors saved for backward while it is active (each storage counted
    once; parameters and other leaves that require grad are not activations and are not counted).

    Activation checkpointing stores only each step's input, so checkpointed steps are (correctly) not counted;
    the backward pass then recomputes one step at a time, briefly holding one step's activations again.
    """

    def __init__(self) -> None:
        self.current = self.peak = 0
        self._refs: dict[tuple, list[int]] = {}

    def _add(self, key: tuple, nbytes: int) -> None:
        if key in self._refs:
            self._refs[key][1] += 1
            return
        self._refs[key] = [nbytes, 1]
        self.current += nbytes
        self.peak = max(self.peak, self.current)

    def _release(self, key: tuple) -> None:
        entry = self._refs.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self._refs[key]

    def _pack(self, t: torch.Tensor):
        if isinstance(t, torch.nn.Parameter) or (t.is_leaf and t.requires_grad):
            return t
        return _Saved(self, t)

    @staticmethod
    def _unpack(packed) -> torch.Tensor:
        return packed.tensor if isinstance(packed, _Saved) else packed

    def __enter__(self) -> ActivationMemory:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)


@dataclass
class Cost:
    seconds: float
    activation_bytes: int  # peak bytes saved for backward (ActivationMemory)
    cuda_peak_bytes: int | None  # torch.cuda.max_memory_allocated during the call, on CUDA

    def __str__(self) -> str:
        cuda = f", CUDA peak {self.cuda_peak_bytes / 2**20:.0f} MiB" if self.cuda_peak_bytes is not None else ""
        return f"{self.seconds:.2f} s, activations {self.activation_bytes / 2**20:.1f} MiB{cuda}"


def measure(fn: Callable[[], object], device: str | torch.device = "cpu") -> Cost:
    """Run ``fn()`` once and return its wall time, its peak saved activations and (on CUDA) its peak allocation."""
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with ActivationMemory() as mem:
        fn()
    if cuda:
        torch.cuda.synchronize()
    return Cost(time.perf_counter() - start, mem.peak, torch.cuda.max_memory_allocated() if cuda else None)
