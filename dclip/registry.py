"""The one registry of named things: diffusion models, CLIPs, worlds, recipe groups, identity terms and costs.

The core's entries are data (``configs/diffusion_models.json``, ``worlds.json``, ``recipes.json``); a plug-in (a
subpackage of ``dclip`` with a ``plugin`` module, such as a world of its own) registers its entries from that
module's ``register()``. Both are read on the first lookup of any table, never on import::

    register("diffusion", "my-ddpm", {"source": "plugin", "unet": "my.module:make_unet", ...})
    table("diffusion")["my-ddpm"]         # every entry of a kind, the plug-ins' included
    resolve("my.module:make_unet")        # the object a "module:attribute" entry names

An entry is data (a dict, a list of rows) or a ``"module:attribute"`` string, so registering imports nothing.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import Iterator, Mapping
from pathlib import Path

#: What can be registered: a diffusion model's entry (``configs/diffusion_models.json``), a CLIP's
#: ``"module:function"`` giving (open_clip config folder, weights file), a world's entry (``configs/worlds.json``),
#: a recipe group's rows (``configs/recipes.json``), an identity term's ``"module:function"`` (Eq. 11), the file
#: of a world's measured chapter costs (:mod:`dclip.budget`; the core's worlds: ``configs/chapter_costs.json``).
KINDS = ("diffusion", "clip", "world", "recipes", "identity", "costs")

#: The core's tables: kind -> file in ``configs/`` (its keys that start with ``_`` are notes, not entries).
CORE_TABLES = {"diffusion": "diffusion_models.json", "world": "worlds.json", "recipes": "recipes.json"}

_ENTRIES: dict[str, dict[str, object]] = {kind: {} for kind in KINDS}
_loaded = False


def _check(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown registry kind {kind!r}; use one of {list(KINDS)}")


def register(kind: str, name: str, entry: object) -> None:
    """Add ``entry`` under ``name`` to the table of ``kind`` (:data:`KINDS`); a name registered twice is an error
    unless the entry is the same."""
    _check(kind)
    if name in _ENTRIES[kind] and _ENTRIES[kind][name] != entry:
        raise ValueError(f"the {kind} {name!r} is registered twice with different entries")
    _ENTRIES[kind][name] = entry


def plugin_modules() -> list[str]:
    """The plug-in modules: ``dclip.<subpackage>.plugin`` for each subpackage that has one (found without
    importing the subpackages)."""
    root = Path(__file__).parent
    return [
        f"{__package__}.{sub.name}.plugin"
        for sub in pkgutil.iter_modules([str(root)])
        if sub.ispkg and any(m.name == "plugin" for m in pkgutil.iter_modules([str(root / sub.name)]))
    ]


def _load() -> None:
    """Register the core's tables, then every plug-in's entries (once)."""
    global _loaded
    if not _loaded:
        _loaded = True
        for kind, file in CORE_TABLES.items():
            for name, entry in json.loads((Path(__file__).parent / "configs" / file).read_text()).items():
                if not name.startswith("_"):
                    register(kind, name, entry)
        for module in plugin_modules():
            importlib.import_module(module).register()


class _Table(Mapping):
    """The live, read-only table of one kind; the core's tables and the plug-ins register on its first use."""

    def __init__(self, kind: str):
        self.kind = kind

    def _entries(self) -> dict[str, object]:
        _load()
        return _ENTRIES[self.kind]

    def __getitem__(self, name: str) -> object:
        return self._entries()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries())

    def __len__(self) -> int:
        return len(self._entries())

    def __repr__(self) -> str:
        return f"registry.table({self.kind!r}): {sorted(self)}"


def table(kind: str) -> Mapping[str, object]:
    """Every entry of ``kind`` by name, the core's and the plug-ins'."""
    _check(kind)
    return _Table(kind)


def resolve(spec: str) -> object:
    """The object named by ``"package.module:attribute"``: how the core reaches what a plug-in defines above it
    without importing it."""
    module, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(module), attribute)


def offline_world() -> tuple[str, dict]:
    """(name, entry) of the world that needs neither a GPU nor the network (its entry has ``"offline": true``):
    the default without CUDA, and the way out an error about missing weights points to."""
    for name, entry in table("world").items():
        if isinstance(entry, dict) and entry.get("offline"):
            return name, entry
    raise LookupError('no offline world is registered (a world entry with "offline": true)')
