"""The model zoo, offline: every loading path against locally saved weights of the real architectures."""

import shutil
import time

import pytest
import torch
from diffusers import UNet2DModel

import dclip
from dclip.convert import ddim_to_diffusers, diffusers_to_ddim
from dclip.hub import ModelNotAvailableError
from dclip.models import DIFFUSION_MODELS, load_diffusion

CELEBA = DIFFUSION_MODELS["celeba-hq-sdedit"]["unet"]


@pytest.fixture(scope="module")
def celeba_unet():
    """A randomly initialised UNet2DModel of exactly google/ddpm-celebahq-256's configuration."""
    torch.manual_seed(0)
    return UNet2DModel(**CELEBA).eval()


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network, an empty Hugging Face cache."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "hf-cache"


def _forward(model, size=256):
    x = torch.linspace(-1, 1, 3 * size * size).reshape(1, 3, size, size)
    return model(x, torch.tensor([500]))


@torch.no_grad()
def test_local_diffusers_folder_round_trips(celeba_unet, tmp_path):
    celeba_unet.save_pretrained(tmp_path / "ddpm")
    model = load_diffusion(str(tmp_path / "ddpm"), device="cpu")
    assert model.image_size == 256 and model.schedule.T == 1000
    loaded = model.unet.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in celeba_unet.state_dict().items())
    out = _forward(model)
    assert out.shape == (1, 3, 256, 256)
    # the same weights; float32 kernels may still round differently for tensors loaded from a file (seen: 2.6e-5
    # on outputs of size 2 on one CPU), so the outputs agree to float32 precision through the 113M-parameter net
    assert torch.allclose(out, _forward(lambda x, t: celeba_unet(x, t).sample), atol=1e-4)


def test_ddim_layout_keys_map_one_to_one(celeba_unet):
    ddim = diffusers_to_ddim(celeba_unet.state_dict())
    assert "temb.dense.0.weight" in ddim and "up.4.attn.0.q.weight" in ddim and "mid.attn_1.proj_out.weight" in ddim
    assert "down.0.block.0.temb_proj.weight" in ddim and "norm_out.weight" in ddim
    assert ddim["down.4.attn.0.q.weight"].dim() == 4  # ddim's attention uses 1x1 convolutions
    assert not any("to_q" in k or "resnets" in k for k in ddim)
    back = ddim_to_diffusers(ddim)
    assert set(back) == set(celeba_unet.state_dict())


@torch.no_grad()
def test_ddim_layout_checkpoint_converts_to_identical_outputs(celeba_unet, tmp_path):
    """A DataParallel-saved ddim-layout checkpoint (like the authors' fine-tuned ones) loads as the same UNet."""
    ddim = {f"module.{k}": v for k, v in diffusers_to_ddim(celeba_unet.state_dict()).items()}
    torch.save(ddim, tmp_path / "human_test_t601.pth")
    model = load_diffusion(str(tmp_path / "human_test_t601.pth"), device="cpu")
    assert torch.equal(_forward(model), _forward(lambda x, t: celeba_unet(x, t).sample))


def test_checkpoint_of_another_architecture_is_a_clear_error(tmp_path):
    torch.save({"conv_in.weight": torch.zeros(3, 3, 3, 3)}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="does not fit the 256x256 UNet"):
        load_diffusion(str(tmp_path / "other.ckpt"), device="cpu")


@pytest.mark.parametrize("name", ["celeba-hq", "celeba-hq-sdedit"])
def test_offline_without_weights_is_one_clear_error(offline, name):
    start = time.perf_counter()
    with pytest.raises(ModelNotAvailableError) as err:
        load_diffusion(name, device="cpu")
    message = str(err.value)
    assert name in message and str(offline) in message and DIFFUSION_MODELS[name]["repo"] in message
    assert "huggingface-cli download" in message and "tinyfaces" in message and "DCLIP_WORLD=tiny" in message
    assert time.perf_counter() - start < 10  # no network time-outs


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown diffusion model 'celebahq'.*celeba-hq"):
        load_diffusion("celebahq")


def test_wrong_image_size_for_the_model_is_a_clear_error(celeba_unet):
    model = dclip.DiffusionModel(celeba_unet, dclip.Schedule.linear(), 256, "test")
    with pytest.raises(ValueError, match=r"takes \(N, 3, 256, 256\).*load_image"):
        model.check_images(torch.zeros(1, 3, 32, 32))


def test_clip_from_local_weights_file(tmp_path):
    import open_clip

    torch.manual_seed(0)
    ref = open_clip.create_model("ViT-B-32-quickgelu").eval()
    torch.save(ref.state_dict(), tmp_path / "vit_b_32.pt")
    clip = dclip.load_clip("ViT-B-32", device="cpu", pretrained=str(tmp_path / "vit_b_32.pt"))
    assert clip.image_size == 224
    x = torch.rand(2, 3, 256, 256) * 2 - 1
    emb = clip.encode_image(x)
    assert emb.shape == (2, 512) and torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(ref.encode_image(clip.preprocess(x)), dim=-1)
    assert torch.allclose(emb, expected, atol=1e-5)
    text = clip.encode_text(["a photo of a face", "an angry face"])
    assert text.shape == (2, 512) and torch.equal(clip.encode_text(["an angry face"])[0], text[1])


def test_clip_preprocessing_is_differentiable_from_the_diffusion_range():
    import open_clip

    clip = dclip.clip.CLIP(
        open_clip.create_model("ViT-B-32-quickgelu").eval(), open_clip.get_tokenizer("ViT-B-32"), "t"
    )
    x = torch.zeros(1, 3, 64, 64, requires_grad=True)
    pre = clip.preprocess(x)
    assert pre.shape == (1, 3, 224, 224)
    # [-1, 1] -> [0, 1] -> CLIP's normalisation: a zero image becomes (0.5 - mean) / std
    assert torch.allclose(pre[0, :, 0, 0], (0.5 - clip.mean.flatten()) / clip.std.flatten(), atol=1e-5)
    clip.encode_image(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_clip_offline_without_weights_is_one_clear_error(offline):
    start = time.perf_counter()
    with pytest.raises(ModelNotAvailableError, match=r"cannot load CLIP 'ViT-B-16'.*tinyclip"):
        dclip.load_clip("ViT-B-16", device="cpu")
    assert time.perf_counter() - start < 10


def test_clip_bad_names_and_texts_are_clear_errors():
    with pytest.raises(ValueError, match="unknown CLIP"):
        dclip.load_clip("ViT-Q-99")
    with pytest.raises(ValueError, match="neither a local weights file nor a pretrained tag"):
        dclip.load_clip("ViT-B-32", pretrained="no-such-tag")


def _tiny_eps_inputs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(2, 3, n, n, generator=torch.Generator().manual_seed(0)), torch.tensor([500, 100])


@pytest.mark.parametrize(
    "dtype, rel_tol",
    # the relative L2 error of eps, a few times each format's unit roundoff (2^-8 for bf16, 2^-11 for fp16);
    # measured on the CPU: 0.4% and 0.04%
    [(torch.bfloat16, 2e-2), (torch.float16, 2e-3)],
    ids=["bf16", "fp16"],
)
def test_tiny_model_in_half_precision_predicts_the_float32_noise(dtype, rel_tol):
    model32 = load_diffusion("tinyfaces", device="cpu")
    model = load_diffusion("tinyfaces", device="cpu", dtype=dtype)
    assert next(model.unet.parameters()).dtype == dtype
    x, t = _tiny_eps_inputs(model.image_size)
    with torch.no_grad():
        eps32, eps = model32(x, t), model(x, t)
    assert eps.dtype == torch.float32 and eps.shape == x.shape  # handed back in the caller's dtype
    error = float((eps - eps32).norm() / eps32.norm())
    assert 0 < error < rel_tol, error


@pytest.mark.slow
def test_tiny_model_compiled_predicts_the_eager_noise():
    """torch.compile (inductor, which builds C++ kernels: about 80 s on one CPU thread the first time)."""
    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("torch.compile's CPU backend (inductor) needs a C++ compiler, and this machine has none")
    eager = load_diffusion("tinyfaces", device="cpu")
    compiled = load_diffusion("tinyfaces", device="cpu", compile=True)
    assert isinstance(compiled.unet, torch._dynamo.eval_frame.OptimizedModule)
    x, t = _tiny_eps_inputs(eager.image_size)
    with torch.no_grad():
        expected, eps = eager(x, t), compiled(x, t)
    assert torch.allclose(eps, expected, atol=1e-4), (eps - expected).abs().max()  # fused kernels reorder sums
