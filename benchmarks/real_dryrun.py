"""Run every chapter in one world and print, per chapter: seconds, peak GPU memory, UNet image-evaluations.

    python benchmarks/real_dryrun.py --world smoke-full            # any machine: the counts of the real world's
                                                                   # settings (small random UNet, tiny CLIP)
    python benchmarks/real_dryrun.py --world celeba-hq --random-weights   # a CUDA GPU, offline: random weights of
                                                                   # the real architectures in a temporary HF cache
    python benchmarks/real_dryrun.py --world smoke-full --store    # also write the world's costs file
    python benchmarks/real_dryrun.py --table                       # the stored table as markdown (docs/results.md)
    python benchmarks/real_dryrun.py --world tiny --cells 3        # also each chapter's three slowest cells
    python benchmarks/real_dryrun.py --world tiny --course         # the course in order in one cache, as a
                                                                   # student runs it (later chapters reuse models)

Each chapter runs in a fresh dclip cache, as in a new Colab runtime (each chapter's badge opens one), so what it
trains is counted in it. UNet image-evaluations (dclip.budget: one image through the forward pass; a backward
counts two, a checkpointed recomputation once more) depend only on a world's settings, not on the device or the
weights, so the smoke-full world (the real world's settings and code on a 32x32 random UNet) gives the real world's
counts on a CPU. Time and memory need the real architecture on a GPU: ``--random-weights`` writes the google/ddpm-
celebahq-256 UNet (architecture of ``configs/diffusion_models.json``) and open_clip's ViT-B-16-quickgelu with
random weights into a temporary Hugging Face cache and runs offline, so nothing is downloaded; the images are
noise, the costs are real.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
T4_FP16_TFLOPS = 15.0  # an assumed sustained fp16 rate of a T4 on this UNet: about a quarter of its 65 TFLOP/s peak

START = """import time, json, torch
from dclip.budget import EvalCounter
_counter = EvalCounter().__enter__()
_start = time.perf_counter()
if torch.cuda.is_available():
    torch.cuda.reset_peak_memory_stats()"""
END = """print("DRYRUN" + json.dumps({"evals": _counter.total, "seconds": time.perf_counter() - _start,
    "peak_gb": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None}))"""


def random_weights_cache(folder: Path) -> None:
    """The real UNet and CLIP with random weights, laid out as a Hugging Face cache in ``folder``."""
    import open_clip
    import torch
    from diffusers import UNet2DModel
    from safetensors.torch import save_file

    from dclip.models import DIFFUSION_MODELS

    def snapshot(repo: str) -> Path:
        rev = "0" * 40
        root = folder / f"models--{repo.replace('/', '--')}"
        (root / "refs").mkdir(parents=True, exist_ok=True)
        (root / "refs" / "main").write_text(rev)
        (root / "snapshots" / rev).mkdir(parents=True, exist_ok=True)
        return root / "snapshots" / rev

    torch.manual_seed(0)
    UNet2DModel(**DIFFUSION_MODELS["celeba-hq-sdedit"]["unet"]).save_pretrained(
        snapshot(DIFFUSION_MODELS["celeba-hq"]["repo"])
    )
    clip = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None)
    repo = open_clip.get_pretrained_cfg("ViT-B-16-quickgelu", "openai")["hf_hub"].strip("/")
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, snapshot(repo) / "open_clip_model.safetensors")


class TimedClient(NotebookClient):
    """Runs a notebook and keeps each code cell's seconds: ``cells`` holds (seconds, index, first source line)."""

    def __init__(self, nb, **kwargs):
        super().__init__(nb, **kwargs)
        self.cells: list[tuple[float, int, str]] = []

    async def async_execute_cell(self, cell, cell_index, *args, **kwargs):
        start = time.perf_counter()
        out = await super().async_execute_cell(cell, cell_index, *args, **kwargs)
        if cell.cell_type == "code":
            first = next((line for line in cell.source.splitlines() if line.strip()), "")
            self.cells.append((time.perf_counter() - start, cell_index, first[:60]))
        return out


def run_chapter(path: Path, env: dict[str, str], *, cache: Path | None = None) -> dict:
    """Run chapter ``path`` in a fresh dclip cache (or in ``cache``); its evals, seconds, peak GB and its code
    cells' seconds (``"cells"``, slowest first, indexed as in the stored chapter)."""
    nb = nbformat.read(path, as_version=4)
    kept = [i for i, c in enumerate(nb.cells) if "NBVAL_SKIP" not in c.source]  # not the Colab install cell
    stored = [None, *kept, None]  # each run cell's index in the stored chapter (START and END have none)
    nb.cells = [nb.cells[i] for i in kept]
    nb.cells.insert(0, nbformat.v4.new_code_cell(START))
    nb.cells.append(nbformat.v4.new_code_cell(END))
    with tempfile.TemporaryDirectory() as cwd:
        env = {"DCLIP_CACHE": str(cache or Path(cwd) / "cache"), **env}  # fresh: a new Colab runtime per chapter
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            client = TimedClient(nb, timeout=3600, kernel_name="python3", resources={"metadata": {"path": cwd}})
            client.execute()
        finally:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    cells = [(sec, stored[i], src) for sec, i, src in client.cells if stored[i] is not None]
    return {**json.loads(text.split("DRYRUN", 1)[1]), "cells": sorted(cells, reverse=True)}


def device_name() -> str:
    import platform

    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"{os.cpu_count()}-core CPU ({platform.machine()})"


def unet_gflops(world: str) -> float:
    """Forward GFLOPs of one image through the world's UNet (torch's FLOP counter, on the CPU)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from dclip.models import load_diffusion

    name = "celeba-hq-sdedit" if world in ("celeba-hq", "smoke-full") else world
    from dclip.models import DIFFUSION_MODELS

    if name == "celeba-hq-sdedit":
        from diffusers import UNet2DModel

        unet = UNet2DModel(**DIFFUSION_MODELS[name]["unet"]).eval()
    else:
        unet = load_diffusion(name, device="cpu").unet
    size = unet.config.sample_size
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(torch.zeros(1, 3, size, size), torch.tensor([500]))
    return counter.get_total_flops() / 1e9


def markdown_table() -> str:
    """Per chapter: UNet image-evaluations in each stored world, measured seconds, the T4 estimate."""
    from dclip.budget import chapter_costs

    table = chapter_costs()
    worlds = table["worlds"]
    t4 = table.get("t4_seconds_per_eval", {})
    head = ["chapter"]
    for w in worlds:
        head.append(f"{w}: UNet evals")
        if any("seconds" in r for r in worlds[w].values()):
            head.append(f"{w}: seconds on {table['devices'][w]}")
        if w in t4:
            head.append(f"{w}: T4 estimate (min)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for chapter in sorted({c for rows in worlds.values() for c in rows}):
        cells = [chapter]
        for w, rows in worlds.items():
            r = rows.get(chapter, {})
            cells.append(f"{r['evals']:,}" if r else "")
            if any("seconds" in x for x in rows.values()):
                cells.append(str(r.get("seconds", "")))
            if w in t4:
                cells.append(f"{r['evals'] * t4[w] / 60:.1f}" if r else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", default="smoke-full")
    p.add_argument("--random-weights", action="store_true", help="real architectures, random weights, offline")
    p.add_argument("--chapters", nargs="*", help="e.g. 03 05 (default: all)")
    p.add_argument("--store", action="store_true", help="write the counts to the world's costs file")
    p.add_argument("--table", action="store_true", help="print the stored table as markdown and stop")
    p.add_argument("--cells", type=int, default=0, help="also list each chapter's slowest cells (this many)")
    p.add_argument(
        "--course", action="store_true", help="one cache for all the chapters, in order, as a student runs the course"
    )
    a = p.parse_args(argv)
    if a.table:
        print(markdown_table())
        return
    if a.store and a.course:
        p.error("--store records each chapter in a fresh cache, as in a new Colab runtime: drop --course")
    env = {"DCLIP_WORLD": a.world, "TQDM_DISABLE": "1", "MPLBACKEND": "Agg"}
    tmp = tempfile.TemporaryDirectory()
    if a.random_weights:
        random_weights_cache(Path(tmp.name))
        env.update(HF_HUB_CACHE=tmp.name, HF_HUB_OFFLINE="1")
    rows, course = {}, (Path(tmp.name) / "course-cache" if a.course else None)
    print(f"{'chapter':<34} {'seconds':>8} {'peak GB':>8} {'UNet evals':>11}", flush=True)
    for path in NOTEBOOKS:
        if a.chapters and path.stem[:2] not in a.chapters:
            continue
        start = time.perf_counter()
        r = run_chapter(path, env, cache=course)
        rows[path.stem[:2]] = r
        peak = "-" if r["peak_gb"] is None else f"{r['peak_gb']:.1f}"
        print(f"{path.stem:<34} {time.perf_counter() - start:8.0f} {peak:>8} {r['evals']:>11,}", flush=True)
        for sec, i, src in r["cells"][: a.cells]:
            print(f"    {sec:6.0f} s  cell {i:>2}  {src}", flush=True)
    print(f"total UNet image-evaluations: {sum(r['evals'] for r in rows.values()):,}")
    print(f"total seconds: {sum(r['seconds'] for r in rows.values()):.0f}")
    if a.store:
        from dclip.budget import costs_file
        from dclip.worlds import WORLDS

        entry = WORLDS[a.world]
        owner = a.world if isinstance(entry["settings"], dict) else entry["settings"]
        file = costs_file(owner)
        table = json.loads(file.read_text()) if file.exists() else {"worlds": {}}
        measured = a.world == owner  # the world's own models ran: its seconds mean something (smoke-full's do not)
        stored = table["worlds"].setdefault(owner, {})  # --chapters: only their rows change
        for k, r in rows.items():
            stored[k] = {"evals": r["evals"], **({"seconds": round(r["seconds"])} if measured else {})}
        table["worlds"][owner] = dict(sorted(stored.items()))
        if measured:
            table.setdefault("devices", {})[owner] = device_name()
        if owner == "celeba-hq":
            gflops = unet_gflops(owner)
            table["unet_gflops"] = {owner: round(gflops, 1)}
            table["t4_seconds_per_eval"] = {owner: round(gflops / (T4_FP16_TFLOPS * 1e3), 4)}
            table["_t4"] = (
                f"T4 time = evaluations x forward GFLOPs / {T4_FP16_TFLOPS} TFLOP/s: an estimate, not measured"
            )
        file.write_text(json.dumps(table, indent=1) + "\n")
        print(f"stored in {file}")
    tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
