"""Quality figures of the tiny world's models: ``python -m dclip.tinyworld.quality judge|clip|faceid|ddpm|all``.

Each figure is measured on fresh faces (seeds the trainings never used), printed, and written into the
model's JSON card under ``quality``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from dclip.tinyworld.faces import ATTRIBUTES, OUT_OF_DOMAIN, FaceSet, full_caption, make_faces
from dclip.tinyworld.zoo import WEIGHTS

FRESH_SEED = 7777  # no training used this seed


@torch.no_grad()
def clip_zero_shot(model, tokenizer, faces: FaceSet, batch_size: int = 500) -> dict[str, float]:
    """Zero-shot attribute accuracy: for each attribute, pick the best of the full captions that differ only in it.

    ``model`` is an open_clip model (``encode_image``/``encode_text``); returns ``{attribute: accuracy}``.
    """
    img = torch.cat([model.encode_image(c, normalize=True) for c in faces.images.split(batch_size)])
    cache: dict[str, torch.Tensor] = {}

    def text_embedding(texts: list[str]) -> torch.Tensor:
        missing = [t for t in dict.fromkeys(texts) if t not in cache]
        if missing:
            for t, e in zip(missing, model.encode_text(tokenizer(missing), normalize=True)):
                cache[t] = e
        return torch.stack([cache[t] for t in texts])

    accuracy = {}
    for key, values in ATTRIBUTES.items():
        correct = 0
        for i, face in enumerate(faces.faces):
            attrs = {k: getattr(face, k) for k in ATTRIBUTES}
            texts = [full_caption(**{**attrs, key: v}) for v in values]
            scores = text_embedding(texts) @ img[i]
            correct += int(values[int(scores.argmax())] == attrs[key])
        accuracy[key] = correct / len(faces)
    return accuracy


def judge_quality(n: int = 1000) -> dict[str, float]:
    """Per-attribute accuracy and part-segmentation pixel accuracy of the judge on ``n`` fresh full-split faces."""
    from dclip.tinyworld.judge import judge_faces, load_judge

    faces = make_faces(n, seed=FRESH_SEED, split="full")
    verdict = judge_faces(load_judge(), faces.images)
    out = {f"accuracy_{k}": (verdict[k] == faces.attributes[k]).float().mean().item() for k in ATTRIBUTES}
    out["segmentation_pixel_accuracy"] = (verdict["parts"] == faces.parts).float().mean().item()
    return out


def clip_quality(n: int = 1000) -> dict[str, float]:
    """Zero-shot attribute accuracy of the tiny CLIP on ``n`` fresh full-split faces."""
    from dclip.clip import load_clip

    clip = load_clip("tinyclip", device="cpu")
    acc = clip_zero_shot(clip.model, clip.tokenizer, make_faces(n, seed=FRESH_SEED + 1, split="full"))
    return {f"zero_shot_{k}": v for k, v in acc.items()}


@torch.no_grad()
def faceid_quality(n: int = 500) -> dict[str, float]:
    """The face recognizer on ``n`` fresh identities: top-1 retrieval of one photo of each among another photo of
    each (:func:`another_photo`), and the mean cosine of pairs that differ in what it should see through
    (expression, hair colour, clothes, background), in the beard or skin alone, or in everything (two identities)."""
    import dataclasses

    from dclip.tinyworld.faceid import identity_views, load_faceid
    from dclip.tinyworld.faces import render_faces

    net = load_faceid()
    views, faces = identity_views(n, 2, seed=FRESH_SEED + 4)
    za, zb = net(views[:, 0]), net(views[:, 1])
    sim = za @ zb.T

    def embed(key: str | None = None, swap=None) -> torch.Tensor:
        """Embeddings of the identities' own faces, with ``key`` changed by ``swap`` where given."""
        drawn = [dataclasses.replace(f, **{key: swap(getattr(f, key))}) if key else f for f in faces]
        return net(render_faces(drawn)[0])

    z = embed()
    beard = embed("beard", lambda b: "no beard" if b == "beard" else "beard")
    skin = embed("skin", lambda s: "dark" if s in ("pale", "tanned") else "pale")
    return {
        "retrieval_top1": (sim.argmax(1) == torch.arange(n)).float().mean().item(),
        "cos_same_identity_another_photo": sim.diag().mean().item(),
        "cos_beard_flipped": (z * beard).sum(-1).mean().item(),
        "cos_skin_changed": (z * skin).sum(-1).mean().item(),
        "cos_other_identity": ((sim.sum() - sim.diag().sum()) / (n * n - n)).item(),
    }


def _histogram(labels: torch.Tensor, k: int) -> torch.Tensor:
    return torch.bincount(labels, minlength=k).float() / len(labels)


def ddpm_quality(n_samples: int = 256, n_recon: int = 64, grid_path: Path | None = None) -> dict:
    """Samples (judged) and DDIM round trips (Table 4 settings) of the tiny DDPM."""
    from dclip.ddim import ddim_generate, ddim_invert
    from dclip.images import to_pil
    from dclip.models import load_diffusion
    from dclip.tinyworld.judge import judge_faces, load_judge

    model = load_diffusion("tinyfaces", device="cpu")
    judge = load_judge()
    noise = torch.randn(n_samples, 3, 32, 32, generator=torch.Generator().manual_seed(FRESH_SEED))
    samples = ddim_generate(model, noise, model.schedule, t0=999, S_gen=50, progress=True, clip_x0=True).clamp(-1, 1)
    verdict = judge_faces(judge, samples)
    train = make_faces(4000, seed=FRESH_SEED + 2, split="in-domain")
    out: dict = {}
    for k in ("skin", "hair"):
        p_sample = _histogram(verdict[k], len(ATTRIBUTES[k]))
        p_train = _histogram(train.attributes[k], len(ATTRIBUTES[k]))
        out[f"samples_{k}_tv_distance"] = 0.5 * (p_sample - p_train).abs().sum().item()
        out[f"samples_{k}_confident_fraction"] = (verdict[f"{k}_prob"].max(1).values > 0.9).float().mean().item()
        held_out = [ATTRIBUTES[k].index(v) for v in OUT_OF_DOMAIN[k]]
        out[f"samples_{k}_out_of_domain_fraction"] = sum((verdict[k] == i).float().mean().item() for i in held_out)
    if grid_path is not None:
        grid = torch.cat(
            [torch.cat(list(samples[r * 16 : (r + 1) * 16]), dim=2) for r in range(min(8, n_samples // 16))], 1
        )
        to_pil(grid)[0].resize((grid.shape[2] * 3, grid.shape[1] * 3), 0).save(grid_path)
        out["sample_grid"] = grid_path.name
    x0 = make_faces(n_recon, seed=FRESH_SEED + 3, split="in-domain").images
    mae = {}
    for t0 in (300, 500, 600):
        latent = ddim_invert(model, x0, model.schedule, t0=t0, S_for=200, progress=True)
        for s_gen in (6, 40) if t0 == 500 else (40,):
            rec = ddim_generate(model, latent, model.schedule, t0=t0, S_gen=s_gen).clamp(-1, 1)
            mae[f"t0={t0},S=(200,{s_gen})"] = ((rec - x0).abs() / 2).mean().item()  # images in [0, 1]
    out["round_trip_mae"] = mae
    return out


def _record(card: str, figures: dict) -> None:
    path = WEIGHTS / f"{card}.json"
    data = json.loads(path.read_text())
    data["quality"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in figures.items()}
    path.write_text(json.dumps(data, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("model", choices=["judge", "clip", "faceid", "ddpm", "all"])
    a = p.parse_args(argv)
    jobs = {
        "judge": ("judge", judge_quality),
        "clip": ("tinyclip", clip_quality),
        "faceid": ("faceid", faceid_quality),
        "ddpm": (
            "tinyfaces",
            lambda: ddpm_quality(grid_path=WEIGHTS.parent.parent.parent / "docs" / "tinyfaces_samples.png"),
        ),
    }
    for key in jobs if a.model == "all" else [a.model]:
        card, fn = jobs[key]
        figures = fn()
        _record(card, figures)
        print(card, json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
