"""Editing recipes as data: the paper's Table 5 (``configs/recipes.json``) and the plug-ins' recipe groups, all in
:mod:`dclip.registry`.

A recipe names the target and reference texts (Eq. 9), the return step t0 and the identity weights
lambda_L1 and lambda_ID (Eq. 11) of one edit: ``get_recipe("celeba-hq", "angry")``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from dclip import registry


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


def recipe_group(group: str) -> list[Recipe]:
    """The recipes of one registered group (``"paper"``: Table 5; a plug-in's by its name)."""
    return [Recipe(*row) for row in registry.table("recipes")[group]]


def all_recipes() -> list[Recipe]:
    """Every registered recipe, group by group."""
    return [r for group in registry.table("recipes") for r in recipe_group(group)]


def recipes_for(model: str) -> list[Recipe]:
    """All recipes of a model (``celeba-hq-sdedit`` shares the ``celeba-hq`` ones)."""
    base = "celeba-hq" if model == "celeba-hq-sdedit" else model
    return [r for r in all_recipes() if r.model == base]


def get_recipe(model: str, name: str) -> Recipe:
    """The recipe ``name`` (e.g. ``"angry"``) of ``model``; a clear ``ValueError`` for an unknown one."""
    for r in recipes_for(model):
        if r.name == name:
            return r
    known = [r.name for r in recipes_for(model)]
    raise ValueError(f"unknown recipe {name!r} for model {model!r}; known: {known or 'none (unknown model?)'}")
