"""The house on three floors (issue #27, docs/floors.md): every module of ``dclip`` sits on one floor of
:data:`FLOOR`, and no import goes from a floor to a floor above it.

1. the math: schedules, DDPM, DDIM, noise combination and the pure helpers they use;
2. the method: the losses, fine-tuning, editing, baselines and metrics of DiffusionCLIP;
3. the machinery: models and their weights, CLIP, caches, worlds, the pipeline, widgets, chapters' tools;
4. the plug-in: the offline tiny world (``dclip.tinyworld``), which only itself may import;
5. the front door: ``dclip`` itself (``__init__.py``, a lazy PEP 562 map of public names); the package's own
   modules import the module that defines a name, never the front door (the version is read through
   ``importlib.metadata``).

The import graph is read from the source with :mod:`ast`: module- and function-level ``import``/``from ...
import`` statements, relative ones, ``from dclip import name`` resolved through the front door's map to the
module that defines ``name``, ``importlib.import_module("dclip...")`` with a literal name, and plug-in
strings ``"dclip.module:attribute"`` (which :func:`dclip.registry.resolve` imports at run time). The front door's own
arrows are those of its map.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

import dclip

PACKAGE = Path(dclip.__file__).parent

FLOOR_NAMES = {1: "the math", 2: "the method", 3: "the machinery", 4: "the plug-in", 5: "the front door"}

#: The one table of floors. A key names a module, or a package and everything under it.
FLOOR: dict[str, int] = {
    # 1. the math, and the pure helpers it uses
    "dclip.schedule": 1,
    "dclip.ddpm": 1,
    "dclip.ddim": 1,
    "dclip.noise_combination": 1,
    "dclip.progress": 1,  # the progress bar of the samplers
    "dclip.toy": 1,  # a closed-form noise predictor (a Gaussian data set), for checks and chapter 01
    "dclip.version": 1,  # the installed version, from importlib.metadata
    "dclip.hashing": 1,  # content hashes of weights and tensors
    "dclip.precision": 1,  # the autocast dtype of the forward passes on a GPU
    "dclip.network": 1,  # whether a host answers (a leaf: no dclip imports)
    # 2. the method
    "dclip.protocols": 2,  # the small interfaces the method is typed against
    "dclip.losses": 2,
    "dclip.finetune": 2,
    "dclip.editing": 2,
    "dclip.baselines": 2,
    "dclip.metrics": 2,
    "dclip.identity": 2,
    # 3. the machinery
    "dclip.models": 3,
    "dclip.device": 3,  # the default device, one choice for the package
    "dclip.hub": 3,
    "dclip.convert": 3,
    "dclip.clip": 3,
    "dclip.cache": 3,
    "dclip.store": 3,
    "dclip.registry": 3,
    "dclip.recipes": 3,
    "dclip.worlds": 3,
    "dclip.realworld": 3,
    "dclip.pipeline": 3,
    "dclip.images": 3,  # image files, photos and paintings
    "dclip.align": 3,  # FFHQ face alignment of photos
    "dclip.budget": 3,  # time and memory of a chapter
    "dclip.profiling": 3,
    "dclip.plotting": 3,
    "dclip.diagrams": 3,
    "dclip.explorers": 3,
    "dclip.widgets": 3,
    "dclip.colab": 3,
    "dclip.editions": 3,
    "dclip.grade": 3,
    "dclip.exercises": 3,
    # 4. the plug-in
    "dclip.tinyworld": 4,
    # 5. the front door
    "dclip": 5,
}
PLUGIN = "dclip.tinyworld"


@dataclass(frozen=True)
class Arrow:
    source: str
    target: str
    line: int


def module_name(path: Path, root: Path) -> str:
    """``dclip.exercises.harness`` for ``<root>/dclip/exercises/harness.py``; a package's ``__init__`` is itself."""
    return ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")


def floor_of(module: str, table: dict[str, int], top: str) -> int | None:
    """The floor of the longest key of ``table`` that is ``module`` or a package above it (``top`` only itself)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in table and (key != top or key == module):
            return table[key]
    return None


def front_door_map(init: Path) -> dict[str, str]:
    """The ``_HOMES`` dict literal of the front door: each public name and the module that defines it."""
    for node in ast.walk(ast.parse(init.read_text())):
        targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
        if any(isinstance(t, ast.Name) and t.id == "_HOMES" for t in targets):
            return ast.literal_eval(node.value)
    return {}


PLUGIN_STRING = re.compile(r"^(\w+(?:\.\w+)*):\w+$")


def import_graph(package: Path) -> dict[str, list[Arrow]]:
    """Every module of ``package`` and its arrows to modules of the same package (see the module docstring)."""
    top, root = package.name, package.parent
    modules = {module_name(f, root): f for f in sorted(package.rglob("*.py"))}
    homes = front_door_map(package / "__init__.py")

    def resolve(name: str) -> str | None:
        """The module of ``modules`` that ``name`` (a module, or a module's attribute) is, or None outside."""
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, list[Arrow]] = {}
    for source, path in modules.items():
        is_package = path.name == "__init__.py"
        arrows: list[tuple[str | None, int]] = []
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                arrows += [(resolve(a.name), node.lineno) for a in node.names if a.name.split(".")[0] == top]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: against this module's package
                    anchor = source.split(".")[: len(source.split(".")) - node.level + is_package]
                    base = ".".join(anchor + ([base] if base else []))
                if base.split(".")[0] != top:
                    continue
                for a in node.names:
                    if base == top and a.name in homes:  # through the front door's map
                        arrows.append((homes[a.name], node.lineno))
                    else:
                        arrows.append((resolve(f"{base}.{a.name}"), node.lineno))
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == (
                "import_module"
            ):
                first = node.args[0] if node.args else None
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    if first.value.split(".")[0] == top:
                        arrows.append((resolve(first.value), node.lineno))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                match = PLUGIN_STRING.match(node.value)
                if match and match[1].split(".")[0] == top:
                    arrows.append((resolve(match[1]), node.lineno))
        if source == top:
            arrows += [(resolve(m), 0) for m in homes.values()]
        graph[source] = sorted({Arrow(source, t, line) for t, line in arrows if t and t != source}, key=str)
    return graph


def unplaced(graph: dict[str, list[Arrow]], table: dict[str, int], top: str) -> list[str]:
    return [m for m in graph if floor_of(m, table, top) is None]


def wrong_way(graph: dict[str, list[Arrow]], table: dict[str, int], top: str, plugin: str) -> list[str]:
    """``module (floor) -> module (floor)  line N`` for each arrow up the floors, or into the plug-in from
    outside it."""
    found = []
    inside = lambda m: m == plugin or m.startswith(plugin + ".")  # noqa: E731
    for arrows in graph.values():
        for a in arrows:
            up, down = floor_of(a.source, table, top), floor_of(a.target, table, top)
            if up < down or (inside(a.target) and not inside(a.source)):
                found.append(f"{a.source} ({up}) -> {a.target} ({down})  line {a.line}")
    return sorted(found)


def cycles(graph: dict[str, list[Arrow]]) -> list[list[str]]:
    """One cycle through each strongly connected group of modules that has one (depth-first search)."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in dict.fromkeys(a.target for a in graph.get(node, ())):
            if state.get(target) == 1:
                found.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])
    return found


def report(package: Path, table: dict[str, int], plugin: str) -> tuple[list[str], list[str], list[str]]:
    """The modules missing from ``table``, the wrong-way arrows and the cycles of ``package``."""
    top = package.name
    graph = import_graph(package)
    missing = unplaced(graph, table, top)
    wrong = wrong_way(graph, table, top, plugin) if not missing else []
    return missing, wrong, [" -> ".join(c) for c in cycles(graph)]


def test_every_module_sits_on_a_floor_and_no_import_goes_up():
    missing, wrong, _ = report(PACKAGE, FLOOR, PLUGIN)
    assert not missing, f"add it to the floor table (FLOOR in tests/test_floors.py): {', '.join(missing)}"
    floors = ", ".join(f"{k} {v}" for k, v in FLOOR_NAMES.items())
    assert not wrong, f"{len(wrong)} imports go the wrong way (floors: {floors}):\n" + "\n".join(wrong)


def test_the_package_has_no_import_cycle_even_through_its_front_door_and_function_level_imports():
    _, _, found = report(PACKAGE, FLOOR, PLUGIN)
    assert not found, "import cycles:\n" + "\n".join(found)


def test_the_floor_check_reports_wrong_way_imports_a_cycle_and_an_unplaced_module(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "plug").mkdir(parents=True)
    files = {
        "__init__.py": '__version__ = "1"\n_HOMES = {"solve": "pkg.math"}\n',
        "math.py": "LOADER = 'pkg.plug.zoo:load'\n",
        "method.py": "from pkg import solve\n\n\ndef f():\n    from .machine import M\n"
        + "    from pkg import __version__\n",
        "machine.py": "import pkg.tools\n",
        "tools.py": "from pkg.machine import Machine\n",
        "plug/__init__.py": "",
        "plug/zoo.py": "from ..machine import Machine\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    table = {"pkg.math": 1, "pkg.method": 2, "pkg.machine": 3, "pkg.tools": 3, "pkg.plug": 4, "pkg": 5}
    missing, wrong, found = report(pkg, table, "pkg.plug")
    assert missing == [] and found == ["pkg.machine -> pkg.tools -> pkg.machine"]
    assert wrong == [
        "pkg.math (1) -> pkg.plug.zoo (4)  line 1",
        "pkg.method (2) -> pkg (5)  line 6",
        "pkg.method (2) -> pkg.machine (3)  line 5",
    ]
    (pkg / "extra.py").write_text("")
    assert report(pkg, table, "pkg.plug")[0] == ["pkg.extra"]


def test_the_machinery_and_the_stand_ins_meet_the_protocols_the_method_is_typed_against():
    """The method floor types its models with :mod:`dclip.protocols`; the machinery's classes and the stand-ins
    are implementations of them, and an object without a schedule is not a scheduled noise predictor."""
    import torch
    from fakes import FakeCLIP, small_model

    from dclip.editing import manipulate
    from dclip.protocols import ScheduledNoisePredictor, TextImageEncoder

    clip = dclip.load_clip("tinyclip", device="cpu")
    assert isinstance(clip, TextImageEncoder) and isinstance(FakeCLIP(), TextImageEncoder)
    assert isinstance(small_model(0), ScheduledNoisePredictor)
    assert not isinstance(lambda x, t: x, ScheduledNoisePredictor)
    x = torch.zeros(1, 3, 16, 16)
    with pytest.raises(ValueError, match="noise predictor with its schedule"):
        manipulate(lambda x, t: x, small_model(0), x, t0=100, S_for=2, S_gen=2)
