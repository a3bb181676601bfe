"""What a chapter costs, independent of the device: UNet image-evaluations, and what they mean on a T4.

One image-evaluation is one image through eps_theta's forward pass; a backward pass through it counts as two, and
a forward recomputed by activation checkpointing counts again. :class:`EvalCounter` counts them while it is
active; ``benchmarks/real_dryrun.py`` runs every chapter with one and stores the table in the world's costs file
(:func:`costs_file`), which :func:`chapter_budget` reads for a chapter's first cell.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

#: The measured costs of the core's worlds; a plug-in registers the file of its own (:mod:`dclip.registry`, "costs").
COSTS_FILE = Path(__file__).parent / "configs" / "chapter_costs.json"
_active: list[EvalCounter] = []


class EvalCounter:
    """``with EvalCounter() as c: ...``: ``c.forward`` and ``c.backward`` image-evaluations, ``c.total`` both."""

    def __init__(self) -> None:
        self.forward = self.backward = 0

    @property
    def total(self) -> int:
        return self.forward + 2 * self.backward

    def __enter__(self) -> EvalCounter:
        _active.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _active.remove(self)


def record(x: torch.Tensor) -> Callable[[torch.Tensor], None]:
    """Count one forward pass of a batch ``x`` through eps_theta, now (a checkpoint's recomputation may stop inside
    the UNet); the returned function, given the output eps, counts the backward pass when gradients reach it. A
    checkpointed step so counts forward, recomputed forward and backward: 4 per image."""
    counters, n = list(_active), x.shape[0]
    for c in counters:
        c.forward += n

    def count_backward(eps: torch.Tensor) -> None:
        if counters and eps.requires_grad:
            eps.register_hook(lambda grad: [setattr(c, "backward", c.backward + n) for c in counters] and None)

    return count_backward


def costs_file(world: str) -> Path:
    """The file of ``world``'s measured chapter costs: the one its plug-in registered, else the core's."""
    from dclip import registry

    return Path(registry.table("costs").get(world, COSTS_FILE))


def chapter_costs() -> dict:
    """Every measured cost, section by section (``worlds``, ``devices``, ...): the core's file and the plug-ins'."""
    from dclip import registry

    merged: dict = {}
    for path in dict.fromkeys([COSTS_FILE, *map(Path, registry.table("costs").values())]):
        for key, value in (json.loads(path.read_text()) if path.exists() else {}).items():
            if isinstance(value, dict):
                merged.setdefault(key, {}).update(value)
            else:
                merged[key] = value
    return merged


def chapter_budget(chapter: str, world) -> str:
    """One line for a chapter's first cell: its UNet image-evaluations in this world (as measured by
    ``benchmarks/real_dryrun.py``) and, for the 256x256 worlds, the time that would take on a T4."""
    table = chapter_costs()
    row = table.get("worlds", {}).get(world.settings_name, {}).get(chapter)
    if row is None:
        return f"chapter {chapter}: no measured cost for the {world.name} world (run benchmarks/real_dryrun.py)"
    line = f"chapter {chapter} in the {world.name} world: about {row['evals']:,} UNet image-evaluations"
    if "seconds" in row:
        line += f"; it took {_minutes(row['seconds'])} on a {table['devices'][world.settings_name]} (measured)"
    t4 = table.get("t4_seconds_per_eval", {}).get(world.settings_name)
    if t4:
        line += f"; about {_minutes(row['evals'] * t4)} of UNet time on a Colab T4 (estimated from its FLOPs)"
    return line


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"
