"""The CUDA paths: DDIM on the GPU, mixed-precision fine-tuning (bf16, and fp16 with loss scaling as on a T4), GPU
memory of Alg. 1 and 2. Skipped without a CUDA GPU (CI has none); run on a lent GPU and in Colab."""

import pytest
import torch

import dclip
from dclip.ddim import ddim_generate, ddim_invert
from dclip.finetune import FinetuneConfig, finetune
from dclip.hashing import fingerprint
from dclip.precision import autocast_dtype
from dclip.profiling import measure
from dclip.store import precompute_latents
from dclip.tinyworld.faces import make_faces
from dclip.tinyworld.identity import lowpass_identity

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


@pytest.fixture(scope="module")
def faces() -> torch.Tensor:
    return make_faces(8, seed=777, split="in-domain").images


@pytest.fixture(scope="module")
def model():
    return dclip.load_diffusion("tinyfaces", device=CUDA)


@pytest.fixture(scope="module")
def clip():
    return dclip.load_clip("tinyclip", device=CUDA)


def test_ddim_reconstruction_on_cuda_matches_the_cpu(faces, model):
    cpu = dclip.load_diffusion("tinyfaces", device="cpu")
    out = {}
    for m in (cpu, model):
        x = faces.to(m.device)
        out[m.device.type] = ddim_generate(
            m, ddim_invert(m, x, m.schedule, t0=400, S_for=20), m.schedule, t0=400, S_gen=6
        ).cpu()
    # cuDNN convolutions may use TF32: agreement to a few thousandths of the [-1, 1] range
    assert (out["cuda"] - out["cpu"]).abs().mean() < 5e-3


def test_auto_precision_is_bf16_on_ampere_and_later():
    major = torch.cuda.get_device_capability(CUDA)[0]
    assert autocast_dtype("auto", CUDA) == (torch.bfloat16 if major >= 8 else torch.float16)
    assert autocast_dtype("fp16", CUDA) == torch.float16


@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_finetune_on_cuda_lowers_the_directional_loss_in_each_precision(faces, model, clip, precision):
    latents = precompute_latents(model, faces, t0=500, S_for=20, cache_dir=None, progress=False)
    before = fingerprint(model)
    cfg = FinetuneConfig(
        "angry face", "face", t0=500, lambda_id=4.0, lr=2e-4, epochs=6, batch_size=4, precision=precision
    )
    result = finetune(model, clip, latents, cfg, lowpass_identity, progress=False)
    direction = [h["direction"] for h in result.history]
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in result.history)
    assert sum(direction[-3:]) / 3 < sum(direction[:3]) / 3 - 0.01
    assert all(p.dtype == torch.float32 and p.device.type == "cuda" for p in result.model.parameters())
    assert fingerprint(model) == before  # the pretrained model is untouched


def test_alg2_and_checkpointing_take_less_gpu_memory_than_plain_alg1(faces, model, clip):
    one = precompute_latents(model, faces[:1], t0=500, S_for=20, cache_dir=None, progress=False)
    peak = {}
    for name, kw in (
        ("alg1", dict(checkpoint=False)),
        ("alg1+ckpt", dict(checkpoint=True)),
        ("alg2", dict(algorithm=2)),
    ):
        cfg = FinetuneConfig("angry face", "face", t0=500, S_gen=6, epochs=1, precision="fp32", **kw)
        peak[name] = measure(lambda c=cfg: finetune(model, clip, one, c, progress=False), CUDA).cuda_peak_bytes
    assert peak["alg2"] < peak["alg1"] and peak["alg1+ckpt"] < peak["alg1"]
