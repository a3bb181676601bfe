"""What the method computes once and keeps: the latents of Alg. 1's first step, fine-tuned models, samples.

Each is one :func:`cached` call: a :class:`Request` (the file name, the metadata the entry must hold, how the
value is written and read) and the computation. The file lives in a folder of the cache (:mod:`dclip.cache`);
an entry that cannot be read or does not match the request is computed again with a warning that names it, and a
write that fails (a full disk) keeps the value in memory for the session, with a warning saying how to keep it.

latents = precompute_latents(model, images, t0=500)           # dclip.finetune.invert_latents, cached
tuned = finetune_or_load(model, clip, latents, cfg)           # dclip.finetune.finetune, cached
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import types
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np
import torch

from dclip.cache import (
    atomic_write,
    ensure_writable,
    keep_in_memory,
    kept,
    load_checked,
    resolve_dir,
    save_tensors_atomic,
)
from dclip.finetune import Callback, FinetuneConfig, FinetuneResult, Latents, finetune, invert_latents
from dclip.hashing import fingerprint, tensor_checksum
from dclip.losses import IdentityTerm
from dclip.protocols import ScheduledNoisePredictor, TextImageEncoder
from dclip.schedule import PAPER_STEPS, check_int

V = TypeVar("V")


@dataclass(frozen=True)
class Request(Generic[V]):
    """One cached value: its file ``name`` in the kind's folder, the ``meta`` its entry records and must hold,
    ``write(path, value)`` and ``read(tensors, meta) -> value``; ``check(tensors, meta)`` gives a reason to
    compute it again (or None); ``save_hint`` says how to keep a value whose write failed."""

    name: str
    meta: Mapping[str, object]
    write: Callable[[Path, V], object]
    read: Callable[[dict[str, torch.Tensor], dict[str, str]], V]
    save_hint: str
    check: Callable[[dict[str, torch.Tensor], dict[str, str]], str | None] | None = None


def cached(
    kind: str,
    request: Request[V],
    compute: Callable[[], V],
    *,
    cache_dir: str | Path | None = "default",
    force: bool = False,
) -> V:
    """``request``'s value from the ``kind`` folder of the cache (``cache_dir`` ``"default"``, resolved at the
    call; another folder; None: no cache), else ``compute()``, written there. The folder is checked writable before
    computing; ``force=True`` computes (and writes) even when an entry exists."""
    folder = resolve_dir(cache_dir, kind)
    if folder is None:
        return compute()
    path = folder / request.name
    if not force:
        value = kept(path)
        if value is not None:
            return value
        found = load_checked(path, expect=request.meta, check=request.check)
        if found is not None:
            return request.read(*found)
    ensure_writable(folder)
    value = compute()
    try:
        request.write(path, value)
    except OSError as e:
        keep_in_memory(path, value, e, save_hint=request.save_hint)
    return value


def _file_stem(model: ScheduledNoisePredictor) -> str:
    return model.name.replace("/", "_")


def precompute_latents(
    model: ScheduledNoisePredictor,
    images: torch.Tensor,
    *,
    t0: int,
    S_for: int = PAPER_STEPS.S_for,
    cache_dir: str | Path | None = "default",
    batch_size: int = 64,
    progress: bool = True,
) -> Latents:
    """:func:`dclip.finetune.invert_latents` (Alg. 1, step 1), kept in the ``latents`` folder of the cache, keyed
    by the model's weights, t0, S_for, the image content and the package version (``cache_dir`` as in
    :func:`cached`). An entry that does not hold these images' latents is computed again, with a warning;
    non-finite latents are an error and never cached."""
    model.check_images(images)
    check_int(S_for, "S_for", minimum=1)
    grid = model.schedule.grid(t0=t0, S=S_for)
    check_int(batch_size, "batch_size", minimum=1)
    base = fingerprint(model)
    key = hashlib.sha1(f"{base}|{grid.t0}|{grid.S}".encode() + images.float().cpu().numpy().tobytes())
    x0 = images.detach().cpu().contiguous()

    def same_images(tensors: dict[str, torch.Tensor], _: dict) -> str | None:
        if set(tensors) != {"x0", "x_t0"} or tensors["x_t0"].shape != x0.shape:
            return f"holds tensors {sorted(tensors)} of other shapes than the {tuple(x0.shape)} images"
        return None if torch.equal(tensors["x0"], x0) else "holds the latents of other images"

    request = Request(
        name=f"{_file_stem(model)}-t{grid.t0}-S{grid.S}-{key.hexdigest()[:16]}.safetensors",
        meta={"t0": grid.t0, "S_for": grid.S, "model": base},
        write=lambda path, lat: save_tensors_atomic(
            path, {"x0": lat.x0, "x_t0": lat.x_t0}, metadata={"t0": lat.t0, "S_for": lat.S_for, "model": base}
        ),
        read=lambda tensors, _: Latents(tensors["x0"], tensors["x_t0"], grid.t0, grid.S),
        save_hint="pass cache_dir= a writable folder",
        check=same_images,
    )
    compute = functools.partial(
        invert_latents, model, images, t0=grid.t0, S_for=grid.S, batch_size=batch_size, progress=progress
    )
    return cached("latents", request, compute, cache_dir=cache_dir)


def save_finetuned(result: FinetuneResult, path: str | Path, *, key: str | None = None) -> Path:
    """Save the fine-tuned weights (``path.safetensors``) and a JSON card of the recipe and settings (``path.json``).

    The weights file also carries the card (and the cache ``key`` of :func:`finetune_or_load`) in its metadata,
    written in one atomic step (:func:`dclip.cache.save_tensors_atomic`): a reader sees weights and card together
    or neither. Non-finite weights are refused."""
    path = Path(path).with_suffix("")
    card = {
        "base_model": result.model.name,
        "base_fingerprint": result.base_fingerprint,
        "config": asdict(result.config),
        "seconds": round(result.seconds, 2),
        "steps": len(result.history),
        "final": result.history[-1] if result.history else None,
    }
    text = json.dumps(card, indent=2, default=str) + "\n"
    weights = {k: v.contiguous() for k, v in result.model.unet.state_dict().items()}
    meta = {"card": text, "base_fingerprint": result.base_fingerprint, "key": key or ""}
    save_tensors_atomic(str(path) + ".safetensors", weights, metadata=meta)
    atomic_write(str(path) + ".json", lambda tmp: tmp.write_text(text))  # a readable copy of the card
    return Path(str(path) + ".safetensors")


def _describe_value(value: object) -> str:
    """A stable, complete description of an argument of an identity term: tensors and arrays by their content."""
    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)}[{tensor_checksum({'v': value})[:16]}]"
    if isinstance(value, np.ndarray):
        return _describe_value(torch.from_numpy(np.ascontiguousarray(value)))
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__}({', '.join(_describe_value(v) for v in value)})"
    if isinstance(value, dict):
        return f"dict({', '.join(f'{k!r}: {_describe_value(v)}' for k, v in sorted(value.items(), key=str))})"
    if value is None or isinstance(value, (bool, int, float, str, np.number)):
        return repr(value)
    if isinstance(value, torch.nn.Module):
        return f"{type(value).__module__}.{type(value).__qualname__}[{fingerprint(value)}]"
    return _describe(value)


def _describe(identity: IdentityTerm | None) -> str:
    """A stable name of an identity term for cache keys: its ``cache_name`` attribute, a module-level function's
    dotted name, or a ``functools.partial`` of these with its arguments (tensors by content). Lambdas, local
    functions, methods and objects without a ``cache_name`` have no stable name: a clear ``ValueError``."""
    if identity is None:
        return "none"
    name = getattr(identity, "cache_name", None)
    if name is not None:
        return str(name)
    if isinstance(identity, functools.partial):
        args = [_describe_value(a) for a in identity.args]
        args += [f"{k}={_describe_value(v)}" for k, v in sorted(identity.keywords.items())]
        return f"{_describe(identity.func)}({', '.join(args)})"
    qualname = getattr(identity, "__qualname__", "")
    if isinstance(identity, (types.FunctionType, types.BuiltinFunctionType)) and "<" not in qualname:
        return f"{identity.__module__}.{qualname}"
    raise ValueError(
        f"the identity term {identity!r} has no stable name for the fine-tuning cache key (lambdas, local "
        "functions, methods and objects without one would share or miss entries): give it a `cache_name` "
        "attribute that changes whenever its behaviour does, use a module-level function, or call finetune() "
        "(no cache)"
    )


def _describe_clip(clip: TextImageEncoder) -> str:
    """The CLIP in a cache key: its ``cache_name``, or its name and a hash of its weights."""
    name = getattr(clip, "cache_name", None)
    if name is not None:
        return str(name)
    if isinstance(clip, torch.nn.Module):
        return f"{getattr(clip, 'name', type(clip).__name__)}[{fingerprint(clip)}]"
    raise ValueError(
        f"the CLIP {type(clip).__name__} is neither a torch module nor has a `cache_name`: the fine-tuning cache "
        "key needs its weights; use dclip.load_clip or call finetune() (no cache)"
    )


def finetune_key(
    model: ScheduledNoisePredictor,
    clip: TextImageEncoder,
    latents: Latents,
    cfg: FinetuneConfig,
    identity: IdentityTerm | None = None,
) -> str:
    """The cache key of a fine-tuning run: everything its result depends on, i.e. the base and CLIP weights, the
    latents, the settings, the identity term (when ``lambda_id > 0``) and the package version."""
    from dclip.version import package_version

    parts = {
        "base": fingerprint(model),
        "clip": _describe_clip(clip),
        "latents": [latents.t0, latents.S_for, tensor_checksum({"x0": latents.x0, "x_t0": latents.x_t0})],
        "config": {k: v for k, v in asdict(cfg).items() if k != "clip_loss" or v != "direction"},  # keys as before
        "identity": _describe(identity) if cfg.lambda_id > 0 else "unused",
        "dclip": package_version(),
    }
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def finetune_or_load(
    model: ScheduledNoisePredictor,
    clip: TextImageEncoder,
    latents: Latents,
    cfg: FinetuneConfig,
    identity: IdentityTerm | None = None,
    *,
    cache_dir: str | Path = "default",
    progress: bool = True,
    callback: Callback | None = None,
    force: bool = False,
) -> ScheduledNoisePredictor:
    """:func:`dclip.finetune.finetune` once and keep the result on disk (:func:`save_finetuned`), keyed by
    everything it depends on (:func:`finetune_key`): later chapters reuse what an earlier one trained. A stored
    result that cannot be read or does not match its key is trained again, with a warning that names the file.
    ``force=True`` trains (and stores) even when a stored result exists, for example to watch the ``callback``.
    ``cache_dir`` ``"default"`` is the ``finetuned`` folder of :func:`dclip.cache.cache_root`, resolved at the call;
    it is checked writable before training; when the write fails anyway (a full disk) the model is returned and
    kept in memory, with a warning saying how to save it elsewhere."""
    key = finetune_key(model, clip, latents, cfg, identity)
    if cache_dir is None:
        raise ValueError("cache_dir=None: finetune_or_load stores its result; call finetune() to train without storing")
    name = f"{_file_stem(model)}-{key}.safetensors"

    def read(state: dict[str, torch.Tensor], meta: dict[str, str]) -> FinetuneResult:
        tuned = copy.deepcopy(model)
        tuned.unet.load_state_dict(state)
        card = json.loads(meta["card"])
        return FinetuneResult(tuned.eval(), cfg, [], card["base_fingerprint"], card["seconds"])

    hint = "save it elsewhere with dclip.store.save_finetuned(dclip.cache.kept(PATH), OTHER_PATH), PATH the file named"
    request = Request(
        name=name,
        meta={"key": key},
        write=lambda path, result: save_finetuned(result, path, key=key),
        read=read,
        save_hint=hint,
    )
    compute = functools.partial(finetune, model, clip, latents, cfg, identity, callback=callback, progress=progress)
    return cached("finetuned", request, compute, cache_dir=cache_dir, force=force).model


def load_finetuned(path: str | Path, base: ScheduledNoisePredictor) -> tuple[ScheduledNoisePredictor, FinetuneConfig]:
    """A fine-tuned model saved by :func:`save_finetuned`, on top of its pretrained ``base`` (checked); the card is
    read from the weights file, or from ``path.json`` for files written before it carried one."""
    from safetensors import safe_open

    path = Path(path).with_suffix("")
    weights = Path(str(path) + ".safetensors")
    if not weights.is_file():
        raise FileNotFoundError(f"no fine-tuned weights at {weights}")
    try:
        with safe_open(str(weights), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise ValueError(f"cannot read fine-tuned weights {weights} ({type(e).__name__}: {e})") from e
    if "checksum" in meta and meta["checksum"] != tensor_checksum(state):
        raise ValueError(f"{weights} does not match its checksum: the file is truncated or altered")
    card_file = Path(str(path) + ".json")
    if "card" in meta:
        card = json.loads(meta["card"])
    elif card_file.is_file():
        card = json.loads(card_file.read_text())
    else:
        raise ValueError(f"{weights} has no card (base model and settings) in it, and {card_file} is missing")
    if card["base_fingerprint"] != fingerprint(base):
        raise ValueError(
            f"{path} was fine-tuned from {card['base_model']!r} (weights {card['base_fingerprint']}), "
            f"not from the given base model {base.name!r} ({fingerprint(base)}): load the right base"
        )
    tuned = copy.deepcopy(base)
    tuned.unet.load_state_dict(state)
    cfg = card["config"]
    cfg["templates"] = tuple(cfg["templates"])
    return tuned.eval(), FinetuneConfig(**cfg)
