"""The paper's Table 4 (and Table 1), measured: reconstruction error over t0 x (S_for, S_gen).

    python benchmarks/table4.py --model tinyfaces --n 64          # the tiny world, CPU
    python benchmarks/table4.py --model celeba-hq --n 16          # the real 256x256 model, on a GPU
    python benchmarks/table4.py --figure table4.png               # also a heat map of the MAE

Prints a markdown table of MAE / SSIM (and LPIPS where its weights are available) and checks the paper's
trends: error falls as S_for and S_gen grow, rises with t0, and S_for < S_gen does not help.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import dclip
from dclip.metrics import MetricUnavailable, lpips_model, mae, ssim
from dclip.widgets import ReconstructionExplorer

STEPS = (6, 40, 200)
T0S = (300, 400, 500, 600)


def inputs(model_name: str, n: int, size: int) -> torch.Tensor:
    if model_name == "tinyfaces":
        from dclip.tinyworld.faces import make_faces

        return make_faces(n, seed=9001, split="in-domain").images  # held out: no training used this seed
    photos = list(dclip.images.sample_photos().values())
    return dclip.load_image([photos[i % len(photos)] for i in range(n)], size)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tinyfaces")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--figure", type=Path, default=None, help="save a PNG heat map of MAE over t0 x (S_for, S_gen)")
    a = p.parse_args()
    model = dclip.load_diffusion(a.model)
    x0 = inputs(a.model, a.n, model.image_size).to(model.device)
    try:
        lp = lpips_model(model.device)
    except MetricUnavailable as e:
        lp, lp_reason = None, str(e)
    explorer = ReconstructionExplorer(model, x0)
    rows, start = {}, time.perf_counter()
    for t0 in T0S:
        for s_for in STEPS:
            for s_gen in STEPS:
                rec = explorer(t0, s_for, s_gen)[0]
                with torch.no_grad():
                    lpips_value = lp(x0, rec).mean().item() if lp is not None else float("nan")
                rows[t0, s_for, s_gen] = (mae(x0, rec), ssim(x0, rec), lpips_value)
    print(f"{a.model}, {a.n} images, {time.perf_counter() - start:.0f} s on {model.device}\n")
    print("| t0 | (S_for, S_gen) | MAE | SSIM | LPIPS |\n|---|---|---|---|---|")
    for (t0, s_for, s_gen), (m, s, lpv) in rows.items():
        print(f"| {t0} | ({s_for}, {s_gen}) | {m:.4f} | {s:.4f} | {'n/a' if lpv != lpv else f'{lpv:.4f}'} |")
    if lp is None:
        print(f"\nLPIPS: {lp_reason}")
    err = {k: v[0] for k, v in rows.items()}
    trends = {
        "error falls as S_for = S_gen grows": all(err[t0, 6, 6] > err[t0, 40, 40] > err[t0, 200, 200] for t0 in T0S),
        "error falls as S_gen grows (S_for = 200)": all(err[t0, 200, 6] > err[t0, 200, 40] for t0 in T0S),
        "error rises with t0 at (200, 40)": err[300, 200, 40] < err[600, 200, 40],
        "S_for < S_gen does not help ((6, 200) worse than (200, 200))": all(
            err[t0, 6, 200] > err[t0, 200, 200] for t0 in T0S
        ),
    }
    print("\n| paper's trend | holds |\n|---|---|")
    for k, v in trends.items():
        print(f"| {k} | {'yes' if v else 'NO'} |")
    if a.figure:
        from dclip.plotting import plot_matrix

        m = torch.tensor([[100 * err[t0, f, g] for g in STEPS] for t0 in T0S for f in STEPS])
        labels = [f"t0={t0}, S_for={f}" for t0 in T0S for f in STEPS]
        fig = plot_matrix(
            m,
            labels,
            [f"S_gen={g}" for g in STEPS],
            f"{a.model}: reconstruction MAE x 100 ({a.n} images)",
            "generation steps",
            "return step and inversion steps",
        )
        fig.savefig(a.figure, dpi=90)


if __name__ == "__main__":
    main()
