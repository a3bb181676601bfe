"""Execute chapters top to bottom and store them, as CI's `pytest --nbval` expects to find them.

    python tools/run_chapters.py notebooks/03_ddim_inversion.ipynb [...]     # default: every chapter

Runs in the world of $DCLIP_WORLD (default: tiny) with progress bars off, then drops what would be stale when the
notebook is reopened: the controls' widget views (their figures live in the kernel) and the saved widget state.
A chapter is written (atomically) only if every cell ran.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
ROOT = Path(__file__).resolve().parents[1]


def strip_widgets(nb: nbformat.NotebookNode) -> int:
    """Remove widget-view outputs and the notebook's saved widget state; returns how many outputs went."""
    removed = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = [o for o in cell.outputs if WIDGET_VIEW not in o.get("data", {})]
        removed += len(cell.outputs) - len(kept)
        cell.outputs = kept
    nb.metadata.pop("widgets", None)
    return removed


def run(path: Path, timeout: int) -> float:
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    strip_widgets(nb)
    tmp = path.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, path)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("chapters", nargs="*", type=Path)
    p.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = p.parse_args()
    os.environ.setdefault("DCLIP_WORLD", "tiny")
    os.environ.setdefault("TQDM_DISABLE", "1")
    for path in args.chapters or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        print(f"{path.name}: {run(path, args.timeout):.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
