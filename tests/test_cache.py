"""The cache keeps nothing partial, stale or non-finite: atomic writes, checked loads, complete keys, list/clear."""

import functools
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fakes import FakeCLIP, small_model

import dclip
import dclip.finetune
import dclip.store
from dclip import cache
from dclip.cache import StaleCacheWarning, atomic_write, load_checked, save_tensors_atomic
from dclip.finetune import FinetuneConfig, Latents, finetune
from dclip.profiling import measure
from dclip.store import finetune_key, finetune_or_load, load_finetuned, precompute_latents
from dclip.tinyworld.identity import lowpass_identity

TESTS = Path(__file__).parent


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An empty cache home ($DCLIP_CACHE) for one test."""
    monkeypatch.setenv("DCLIP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _clip() -> FakeCLIP:
    clip = FakeCLIP()
    clip.cache_name = "fake-clip-0"  # not a torch module: it names itself for cache keys
    return clip


def _cfg(**kw) -> FinetuneConfig:
    return FinetuneConfig("angry", "face", t0=300, S_gen=2, **kw)


def _count(monkeypatch, name: str, module=None) -> list:
    """Count the calls of ``module.<name>`` (default dclip.finetune), still calling it."""
    module = module or dclip.finetune
    calls, real = [], getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


# --- atomic writes -----------------------------------------------------------------------------------------


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "entry.txt"
    atomic_write(target, lambda p: p.write_text("old"))

    def half_then_fail(p: Path) -> None:
        p.write_text("new but cut")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["entry.txt"]


#: The start of a child process whose safetensors writes stop half-way and hang until it is killed.
SLOW_SAVE = """
import sys, time
sys.path.insert(0, {tests!r})
import safetensors.torch as st
real = st.save_file

def slow_save(tensors, filename, metadata=None):  # write half of the file, then hang until killed
    real(tensors, filename, metadata=metadata)
    data = open(filename, "rb").read()
    open(filename, "wb").write(data[: len(data) // 2])
    print("WRITING", flush=True)
    time.sleep(600)

st.save_file = slow_save
"""

CHILD = (
    SLOW_SAVE
    + """import torch
from fakes import FakeCLIP, small_model
from dclip.finetune import FinetuneConfig
from dclip.store import finetune_or_load, precompute_latents
images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 1.6 - 0.8
latents = precompute_latents(small_model(), images, t0=300, S_for=2, cache_dir={latents!r}, progress=False)
clip = FakeCLIP()
clip.cache_name = "fake-clip-0"
cfg = FinetuneConfig("angry", "face", t0=300, S_gen=2)
finetune_or_load(small_model(), clip, latents, cfg, cache_dir={finetuned!r}, progress=False)
"""
)


def _kill_while_writing(script: str) -> None:
    """Run ``script`` in a fresh Python, wait until it is half-way through writing a file, SIGKILL it."""
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "WRITING"
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        child.kill()


@pytest.mark.slow
def test_a_process_killed_while_writing_latents_leaves_no_entry_and_the_next_call_recomputes(tmp_path, monkeypatch):
    latents_dir, finetuned_dir = tmp_path / "latents", tmp_path / "finetuned"
    _kill_while_writing(CHILD.format(tests=str(TESTS), latents=str(latents_dir), finetuned=str(finetuned_dir)))
    names = [p.name for p in latents_dir.iterdir()]
    assert len(names) == 1 and names[0].startswith(".") and names[0].endswith(".tmp")  # only the partial temp file
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 1.6 - 0.8
    fresh = precompute_latents(small_model(), images, t0=300, S_for=2, cache_dir=None, progress=False)
    inverted = _count(monkeypatch, "ddim_invert")
    lat = precompute_latents(small_model(), images, t0=300, S_for=2, cache_dir=latents_dir, progress=False)
    assert len(inverted) == 1 and torch.equal(lat.x_t0, fresh.x_t0)
    again = precompute_latents(small_model(), images, t0=300, S_for=2, cache_dir=latents_dir, progress=False)
    assert len(inverted) == 1 and torch.equal(again.x_t0, fresh.x_t0)


@pytest.mark.slow
def test_a_process_killed_while_writing_a_finetuned_model_leaves_no_entry_and_the_next_call_trains(
    tmp_path, monkeypatch
):
    latents_dir, finetuned_dir = tmp_path / "latents", tmp_path / "finetuned"
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 1.6 - 0.8
    latents = precompute_latents(small_model(), images, t0=300, S_for=2, cache_dir=latents_dir, progress=False)
    _kill_while_writing(CHILD.format(tests=str(TESTS), latents=str(latents_dir), finetuned=str(finetuned_dir)))
    names = [p.name for p in finetuned_dir.iterdir()]
    assert len(names) == 1 and names[0].endswith(".tmp")  # no .safetensors and no .json under their names
    trained = _count(monkeypatch, "finetune", module=dclip.store)
    tuned = finetune_or_load(small_model(), _clip(), latents, _cfg(), cache_dir=finetuned_dir, progress=False)
    again = finetune_or_load(small_model(), _clip(), latents, _cfg(), cache_dir=finetuned_dir, progress=False)
    assert len(trained) == 1
    assert all(torch.equal(a, b) for a, b in zip(tuned.state_dict().values(), again.state_dict().values()))


# --- checked loads -----------------------------------------------------------------------------------------


def _corrupt(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(os.urandom(len(data)))
    elif how == "one byte changed":
        path.write_bytes(data[:-9] + bytes([data[-9] ^ 1]) + data[-8:])
    elif how == "no metadata":
        from safetensors.torch import load_file, save_file

        save_file({k: torch.zeros_like(v) for k, v in load_file(path).items()}, str(path))


CORRUPTIONS = ["truncated", "empty", "garbage", "one byte changed", "no metadata"]


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_a_damaged_latent_entry_is_recomputed_with_a_warning_naming_it(base, images, tmp_path, how):
    first = precompute_latents(base, images, t0=300, S_for=2, cache_dir=tmp_path, progress=False)
    (path,) = tmp_path.iterdir()
    _corrupt(path, how)
    with pytest.warns(StaleCacheWarning, match=f"cache entry {path}.*computing it again"):
        again = precompute_latents(base, images, t0=300, S_for=2, cache_dir=tmp_path, progress=False)
    assert torch.equal(again.x_t0, first.x_t0) and torch.equal(again.x0, images)
    assert load_checked(path) is not None  # rewritten whole


def test_latents_computed_and_latents_loaded_from_the_cache_are_the_same_tensors(base, images, tmp_path):
    """Rendered images are often channels-last views; latents computed from them must be laid out as loaded ones,
    or what follows (e.g. the activation memory that a training step saves) differs between a cold and a warm cache."""
    channels_last = images.contiguous(memory_format=torch.channels_last)
    computed = precompute_latents(base, channels_last, t0=300, S_for=2, cache_dir=tmp_path, progress=False)
    loaded = precompute_latents(base, channels_last, t0=300, S_for=2, cache_dir=tmp_path, progress=False)
    for a, b in ((computed.x0, loaded.x0), (computed.x_t0, loaded.x_t0)):
        assert torch.equal(a, b) and a.stride() == b.stride() == images.contiguous().stride()

    def saved_bytes(lat: Latents) -> int:
        one = Latents(lat.x0[:1].clone(), lat.x_t0[:1].clone(), lat.t0, lat.S_for)
        cfg = _cfg(epochs=1, batch_size=1, checkpoint=False, lambda_id=0.0)
        return measure(lambda: finetune(base, _clip(), one, cfg, None, progress=False)).activation_bytes

    assert saved_bytes(computed) == saved_bytes(loaded)


def test_a_latent_entry_for_another_request_is_not_returned(base, images, tmp_path):
    """A valid file with other contents (one image, t0 = 123) under the name of a t0 = 300 request."""
    right = precompute_latents(base, images, t0=300, S_for=2, cache_dir=tmp_path, progress=False)
    (path,) = tmp_path.iterdir()
    other = precompute_latents(base, images[:1], t0=123, S_for=2, cache_dir=None, progress=False)
    save_tensors_atomic(path, {"x0": other.x0, "x_t0": other.x_t0}, metadata={"t0": 123, "S_for": 2})
    with pytest.warns(StaleCacheWarning, match="holds t0='123' where '300' was asked"):
        lat = precompute_latents(base, images, t0=300, S_for=2, cache_dir=tmp_path, progress=False)
    assert lat.t0 == 300 and len(lat) == 4 and torch.equal(lat.x_t0, right.x_t0)
    meta = load_checked(path)[1]
    save_tensors_atomic(path, {"x0": other.x0, "x_t0": other.x_t0}, metadata={k: meta[k] for k in ("t0", "S_for")})
    with pytest.warns(StaleCacheWarning, match="holds model=None where"):  # written without the model's hash
        precompute_latents(base, images, t0=300, S_for=2, cache_dir=tmp_path, progress=False)
    meta = load_checked(path)[1]
    save_tensors_atomic(
        path, {"x0": other.x0, "x_t0": other.x_t0}, metadata={k: meta[k] for k in ("t0", "S_for", "model")}
    )
    with pytest.warns(StaleCacheWarning, match="other shapes"):
        precompute_latents(base, images, t0=300, S_for=2, cache_dir=tmp_path, progress=False)


def test_non_finite_values_are_never_cached(base, images, tmp_path):
    with pytest.raises(ValueError, match="x_t0 hold non-finite values"):
        save_tensors_atomic(tmp_path / "nan.safetensors", {"x_t0": torch.tensor([1.0, float("nan")])})
    broken = small_model()
    with torch.no_grad():
        next(broken.parameters()).fill_(float("nan"))
    with pytest.raises(ValueError, match="non-finite latents.*nothing was cached"):
        precompute_latents(broken, images, t0=300, S_for=2, cache_dir=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_diverged_finetuning_run_stops_and_is_not_cached(base, images, tmp_path):
    latents = precompute_latents(base, images[:2], t0=300, S_for=2, cache_dir=None, progress=False)
    with pytest.raises(FloatingPointError, match="diverged.*lower lr=1000000.0"):
        finetune_or_load(base, _clip(), latents, _cfg(lr=1e6, epochs=2), cache_dir=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_a_damaged_finetuned_entry_is_trained_again_with_a_warning_naming_it(base, images, tmp_path, how, monkeypatch):
    latents = precompute_latents(base, images[:2], t0=300, S_for=2, cache_dir=None, progress=False)
    first = finetune_or_load(base, _clip(), latents, _cfg(), cache_dir=tmp_path, progress=False)
    (weights,) = tmp_path.glob("*.safetensors")
    _corrupt(weights, how)
    trained = _count(monkeypatch, "finetune", module=dclip.store)
    with pytest.warns(StaleCacheWarning, match=f"cache entry {weights}"):
        again = finetune_or_load(base, _clip(), latents, _cfg(), cache_dir=tmp_path, progress=False)
    assert len(trained) == 1
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))


def test_the_finetuned_weights_carry_their_card_so_a_missing_json_changes_nothing(base, images, tmp_path, monkeypatch):
    latents = precompute_latents(base, images[:2], t0=300, S_for=2, cache_dir=None, progress=False)
    first = finetune_or_load(base, _clip(), latents, _cfg(), cache_dir=tmp_path, progress=False)
    (card,) = tmp_path.glob("*.json")
    card.unlink()
    trained = _count(monkeypatch, "finetune", module=dclip.store)
    again = finetune_or_load(base, _clip(), latents, _cfg(), cache_dir=tmp_path, progress=False)
    loaded, cfg = load_finetuned(card.with_suffix(".safetensors"), base)
    assert trained == [] and cfg == _cfg()
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), loaded.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))


def test_load_finetuned_names_a_damaged_file(base, images, tmp_path):
    latents = precompute_latents(base, images[:2], t0=300, S_for=2, cache_dir=None, progress=False)
    finetune_or_load(base, _clip(), latents, _cfg(), cache_dir=tmp_path, progress=False)
    (weights,) = tmp_path.glob("*.safetensors")
    _corrupt(weights, "truncated")
    with pytest.raises(ValueError, match=f"cannot read fine-tuned weights {weights}"):
        load_finetuned(weights, base)


# --- the fine-tuning cache key -----------------------------------------------------------------------------


def _two_tensors_term(x_gen, x0, weight):
    return (weight.mean() * (x_gen - x0)).abs().flatten(1).mean(1)


def test_the_finetune_key_holds_everything_the_result_depends_on(base, images, monkeypatch):
    latents = precompute_latents(base, images[:2], t0=300, S_for=2, cache_dir=None, progress=False)
    other_latents = precompute_latents(base, images[2:], t0=300, S_for=2, cache_dir=None, progress=False)
    cfg = _cfg(lambda_id=0.5)
    key = functools.partial(finetune_key, base, _clip(), latents, cfg)
    reference = key(lowpass_identity)
    assert reference == key(lowpass_identity)  # stable
    other_clip = _clip()
    other_clip.cache_name = "fake-clip-1"
    big = torch.zeros(5000)
    changed = big.clone()
    changed[2500] = 1.0  # the same repr (truncated), another tensor
    keys = [
        finetune_key(small_model(seed=1), _clip(), latents, cfg, lowpass_identity),  # base weights
        finetune_key(base, other_clip, latents, cfg, lowpass_identity),  # CLIP
        finetune_key(base, _clip(), other_latents, cfg, lowpass_identity),  # latents
        finetune_key(base, _clip(), latents, _cfg(lambda_id=0.5, lr=1e-5), lowpass_identity),  # settings
        key(functools.partial(_two_tensors_term, weight=big)),  # identity term
        key(functools.partial(_two_tensors_term, weight=changed)),
    ]
    assert len({reference, *keys}) == 7
    monkeypatch.setattr(dclip.version, "package_version", lambda: "99.0")
    assert key(lowpass_identity) != reference  # the package version


def test_identity_terms_without_a_stable_name_are_a_clear_error(base, images, tmp_path):
    latents = precompute_latents(base, images[:2], t0=300, S_for=2, cache_dir=None, progress=False)
    cfg = _cfg(lambda_id=0.5)
    unnamed = [lambda a, b: (a - b).abs().mean((1, 2, 3)), torch.nn.Identity()]
    for term in unnamed:
        with pytest.raises(ValueError, match="no stable name for the fine-tuning cache key.*cache_name"):
            finetune_or_load(base, _clip(), latents, cfg, term, cache_dir=tmp_path, progress=False)
    named = torch.nn.Identity()
    named.cache_name = "my-term-v1"
    assert finetune_key(base, _clip(), latents, cfg, named) != finetune_key(
        base, _clip(), latents, cfg, lowpass_identity
    )
    assert finetune_key(base, _clip(), latents, _cfg(), unnamed[0]) == finetune_key(base, _clip(), latents, _cfg())
    assert list(tmp_path.iterdir()) == []  # nothing trained


def test_a_real_clip_is_keyed_by_its_weights(base, images):
    latents = precompute_latents(base, images[:2], t0=300, S_for=2, cache_dir=None, progress=False)
    clip = dclip.load_clip("tinyclip", device="cpu")
    other = dclip.load_clip("tinyclip", device="cpu")
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)
    assert finetune_key(base, clip, latents, _cfg()) != finetune_key(base, other, latents, _cfg())
    unnamed = FakeCLIP()
    del unnamed.cache_name
    with pytest.raises(ValueError, match="neither a torch module nor has a `cache_name`"):
        finetune_key(base, unnamed, latents, _cfg())


# --- one home, list, clear and the size cap ----------------------------------------------------------------


def _entry(kind: str, name: str, n: int) -> Path:
    return save_tensors_atomic(cache.cache_path(kind, name + ".safetensors"), {"x": torch.zeros(n)})


def test_list_and_clear_show_and_remove_entries_with_their_sizes(home, capsys):
    _entry("latents", "a", 1000)
    _entry("finetuned", "b", 3000)
    (cache.cache_dir("finetuned") / "b.json").write_text("{}")
    entries = cache.entries()
    assert [(e.kind, e.name, len(e.files)) for e in entries] == [("latents", "a", 1), ("finetuned", "b", 2)]
    assert entries[0].bytes == (home / "latents" / "a.safetensors").stat().st_size > 4000
    cache.main(["list"])
    out = capsys.readouterr().out
    assert str(home) in out and "2 entries" in out
    assert all(f"{e.kind:10s} {cache._size(e.bytes):>9s}" in out for e in entries) and "kB" in out
    cache.main(["clear", "--kind", "latents"])
    assert "removed 1 entries" in capsys.readouterr().out
    assert [e.name for e in cache.entries()] == ["b"]
    assert cache.clear(older_than_days=1) == (0, 0)  # used just now
    assert cache.clear()[0] == 1 and cache.entries() == []


def test_the_cache_command_runs_as_a_module(home):
    _entry("latents", "a", 10)
    run = subprocess.run(
        [sys.executable, "-m", "dclip.cache", "list"], capture_output=True, text=True, env=os.environ, timeout=120
    )
    assert run.returncode == 0 and "1 entries" in run.stdout and str(home) in run.stdout


def test_the_size_cap_removes_the_least_recently_used_entries(home, monkeypatch):
    old = _entry("latents", "old", 100_000)
    used = _entry("latents", "used", 100_000)
    os.utime(old, (1e9, 1e9))
    os.utime(used, (1e9 + 1, 1e9 + 1))
    load_checked(used)  # a read counts as a use
    monkeypatch.setenv("DCLIP_CACHE_MAX_GB", str(900_000 / 2**30))
    _entry("latents", "new", 100_000)
    assert sorted(e.name for e in cache.entries()) == ["new", "used"]


def test_cache_names_and_kinds_are_checked(home):
    with pytest.raises(ValueError, match="unknown cache kind 'models'"):
        cache.cache_dir("models")
    with pytest.raises(ValueError, match="plain file name"):
        cache.cache_path("latents", "../escape")
    assert cache.cache_path("samples", "x.safetensors") == home / "samples" / "x.safetensors"
    assert cache.resolve_dir("default", "latents") == home / "latents"
    assert cache.resolve_dir("default", "finetuned") == home / "finetuned"


def test_a_finetuned_entry_is_written_whole_with_its_card(base, images, tmp_path):
    latents = precompute_latents(base, images[:2], t0=300, S_for=2, cache_dir=None, progress=False)
    finetune_or_load(base, _clip(), latents, _cfg(), cache_dir=tmp_path, progress=False)
    (weights,) = tmp_path.glob("*.safetensors")
    meta = load_checked(weights)[1]
    assert meta["key"] == weights.stem.split("-")[-1] and '"target": "angry"' in meta["card"]
    assert meta["card"] == weights.with_suffix(".json").read_text()


SAMPLES_CHILD = (
    SLOW_SAVE
    + """from fakes import small_model
from dclip.realworld import sample_images
sample_images(small_model(), 2, seed=7, steps=2, cache_dir={samples!r}, progress=False)
"""
)


@pytest.mark.slow
def test_a_process_killed_while_writing_samples_leaves_no_entry_and_the_next_call_samples_again(tmp_path, monkeypatch):
    import dclip.realworld as realworld

    samples_dir = tmp_path / "samples"
    _kill_while_writing(SAMPLES_CHILD.format(tests=str(TESTS), samples=str(samples_dir)))
    names = [p.name for p in samples_dir.iterdir()]
    assert len(names) == 1 and names[0].startswith(".") and names[0].endswith(".tmp")
    fresh = realworld.sample_images(small_model(), 2, seed=7, steps=2, cache_dir=None, progress=False)
    sampled = _count(monkeypatch, "ddim_generate", module=realworld)
    first = realworld.sample_images(small_model(), 2, seed=7, steps=2, cache_dir=samples_dir, progress=False)
    again = realworld.sample_images(small_model(), 2, seed=7, steps=2, cache_dir=samples_dir, progress=False)
    assert len(sampled) == 1 and torch.equal(first, fresh) and torch.equal(again, fresh)
