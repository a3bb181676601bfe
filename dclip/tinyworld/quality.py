"""Quality figures of the tiny world's models: ``python -m dclip.tinyworld.quality [judge|clip|ddpm|all]``.

Each figure is measured on fresh faces (seeds the trainings never used) and written into the model's card.
"""
from __future__ import annotations

import torch

from dclip.tinyworld.faces import ATTRIBUTES, FaceSet, full_caption


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
