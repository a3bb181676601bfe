"""Write the Colab set-up cell (dclip.colab.CELL, its one home) as the first code cell of every chapter.

    python tools/colab_cell.py [notebooks/03_ddim_inversion.ipynb ...]     # default: every chapter

The cell is NBVAL_SKIP and prints nothing outside Colab, so its stored output is empty; nothing else changes.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import nbformat

from dclip.colab import CELL

ROOT = Path(__file__).resolve().parents[1]


def write_cell(path: Path) -> bool:
    """Set the first code cell of ``path`` to :data:`CELL`; returns whether the file changed."""
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code")
    if cell.source == CELL and not cell.outputs:
        return False
    cell.source, cell.outputs, cell.execution_count = CELL, [], None
    tmp = path.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, path)
    return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("chapters", nargs="*", type=Path)
    args = p.parse_args()
    for path in args.chapters or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        print(f"{path.name}: {'written' if write_cell(path) else 'unchanged'}")


if __name__ == "__main__":
    main()
