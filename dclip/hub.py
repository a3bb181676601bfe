"""The Hugging Face hub: its cache, whether it answers, and downloads that fail at once and say how to fix it.

Nothing here imports torch, so a set-up cell can use it before anything heavy loads.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from dclip import network


class ModelNotAvailableError(OSError):
    """Weights that cannot be found locally nor downloaded; the message says where to get them."""


@contextmanager
def offline_unless_reachable():
    """Within this block the Hugging Face client works from its cache alone when the hub cannot be reached,
    so a missing file fails at once instead of after a minute of retries."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = before or not network.reachable()
    try:
        yield constants.HF_HUB_OFFLINE
    finally:
        constants.HF_HUB_OFFLINE = before


def hub_cache() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def offline_way_out(load: str, kind: str) -> str:
    """``"the offline <world> world: <load>('<its model>'), or set DCLIP_WORLD=<world>"``: what an error about
    missing weights suggests instead (``load`` the loader's name, ``kind`` "diffusion" or "clip")."""
    from dclip.registry import offline_world

    name, entry = offline_world()
    return f"the offline {name} world: {load}({entry[kind]!r}), or set DCLIP_WORLD={name}"


def _not_available(name: str, repo: str, detail: str) -> ModelNotAvailableError:
    return ModelNotAvailableError(
        f"cannot load model {name!r}: the weights of hub repo {repo!r} are not in the Hugging Face cache "
        f"({hub_cache()}) and the hub cannot be reached ({detail}). To fix: on a machine with internet run "
        f"`huggingface-cli download {repo}` and copy the cache, or pass a local folder or checkpoint path as the "
        f"name; or use {offline_way_out('load_diffusion', 'diffusion')}."
    )


def hub_file(name: str, repo: str, filename: str) -> str:
    """Path of ``filename`` of hub ``repo`` (for model ``name``), from the cache or (if reachable) downloaded."""
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(repo, filename, local_files_only=True)
    except Exception:  # not cached: fall through to a download, if the hub answers
        pass
    if not network.reachable():
        raise _not_available(name, repo, "offline")
    try:
        return hf_hub_download(repo, filename)
    except Exception as e:
        raise _not_available(name, repo, f"{type(e).__name__}: {e}") from e


def unet_from_pretrained(name: str, source: str):
    """diffusers' ``UNet2DModel.from_pretrained`` from a local folder, the cache, or the hub."""
    from diffusers import UNet2DModel

    if Path(source).is_dir():
        sub = "unet" if (Path(source) / "unet" / "config.json").exists() else None
        return UNet2DModel.from_pretrained(source, subfolder=sub)
    for local in (True, False):
        if not local and not network.reachable():
            raise _not_available(name, source, "offline")
        for sub in (None, "unet"):
            try:
                return UNet2DModel.from_pretrained(source, subfolder=sub, local_files_only=local)
            except OSError as e:
                error = e
    raise _not_available(name, source, f"{type(error).__name__}: {error}")
