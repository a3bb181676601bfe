"""Editing recipes as data: the paper's Table 5 and the tiny world's (``configs/recipes.json``).

A recipe names the target and reference texts (Eq. 9), the return step t0 and the identity weights
lambda_L1 and lambda_ID (Eq. 11) of one edit: ``get_recipe("celeba-hq", "angry")``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

_DATA = json.loads((Path(__file__).parent / "configs" / "recipes.json").read_text())


@dataclass(frozen=True)
class Recipe:
    domain: str
    model: str
    name: str
    target: str
    reference: str
    t0: int
    lambda_l1: float
    lambda_id: float

    def to_dict(self) -> dict:
        return asdict(self)


def _load(group: str) -> list[Recipe]:
    return [Recipe(*row) for row in _DATA[group]]


PAPER_RECIPES: list[Recipe] = _load("paper")
TINY_RECIPES: list[Recipe] = _load("tiny")
RECIPES: list[Recipe] = PAPER_RECIPES + TINY_RECIPES


def recipes_for(model: str) -> list[Recipe]:
    """All recipes of a model (``celeba-hq-sdedit`` shares the ``celeba-hq`` ones)."""
    base = "celeba-hq" if model == "celeba-hq-sdedit" else model
    return [r for r in RECIPES if r.model == base]


def get_recipe(model: str, name: str) -> Recipe:
    """The recipe ``name`` (e.g. ``"angry"``) of ``model``; a clear ``ValueError`` for an unknown one."""
    for r in recipes_for(model):
        if r.name == name:
            return r
    known = [r.name for r in recipes_for(model)]
    raise ValueError(f"unknown recipe {name!r} for model {model!r}; known: {known or 'none (unknown model?)'}")
