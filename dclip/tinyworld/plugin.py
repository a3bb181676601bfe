"""The tiny world registers itself: its DDPM, CLIP, identity stand-in, world and recipes
(``configs/plugin.json``) become entries of :mod:`dclip.registry`, which imports this module on its first lookup.

Registering imports no model: each entry is data or a ``"module:attribute"`` the core resolves when it loads it.
"""

from __future__ import annotations

import json

from dclip import registry
from dclip.tinyworld.zoo import CONFIGS, load_config


def register() -> None:
    """Add every entry of ``configs/plugin.json`` to the registry (the DDPM's with its training schedule, the
    costs file as a path)."""
    entries = json.loads((CONFIGS / "plugin.json").read_text())
    for name, entry in entries["diffusion"].items():
        entries["diffusion"][name] = {**entry, "schedule": load_config(name)["schedule"]}
    for name, file in entries["costs"].items():
        entries["costs"][name] = str(CONFIGS / file)
    for kind in registry.KINDS:
        for name, entry in entries[kind].items():
            registry.register(kind, name, entry)
