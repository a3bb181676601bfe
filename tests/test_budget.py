"""UNet image-evaluations: the device-independent cost each chapter states in its first cell."""

import pytest
import torch
from fakes import FakeCLIP

from dclip.budget import EvalCounter, chapter_budget, chapter_costs
from dclip.ddim import ddim_generate, ddim_invert
from dclip.finetune import FinetuneConfig, Latents, finetune


def test_inversion_and_generation_count_one_evaluation_per_image_and_step(base):
    x = torch.zeros(3, 3, 16, 16)
    with EvalCounter() as c:
        ddim_invert(base, x, base.schedule, t0=500, S_for=4)
        ddim_generate(base, x, base.schedule, t0=500, S_gen=5)
    assert (c.forward, c.backward, c.total) == (3 * 4 + 3 * 5, 0, 27)


@pytest.mark.parametrize(("checkpoint", "per_step"), [(False, 3), (True, 4)])
def test_an_alg1_iteration_counts_forward_backward_and_recomputation(base, checkpoint, per_step):
    x = torch.zeros(2, 3, 16, 16)
    cfg = FinetuneConfig("angry face", "face", t0=500, S_gen=3, batch_size=2, checkpoint=checkpoint)
    with EvalCounter() as c:
        finetune(base, FakeCLIP(), Latents(x, x, 500, 4), cfg, progress=False)
    assert c.backward == 2 * 3  # backward through every step of the one iteration
    assert c.total == per_step * 2 * 3  # forward (+ recomputed forward) + 2 x backward, per image and step


def test_counters_nest_and_stop_counting_on_exit(base):
    x = torch.zeros(1, 3, 16, 16)
    with EvalCounter() as outer:
        with EvalCounter() as inner:
            ddim_generate(base, x, base.schedule, t0=500, S_gen=2)
        ddim_generate(base, x, base.schedule, t0=500, S_gen=3)
    ddim_generate(base, x, base.schedule, t0=500, S_gen=3)
    assert (inner.total, outer.total) == (2, 5)


def test_every_chapter_has_a_stored_count_for_the_tiny_and_real_settings():
    import dclip

    worlds = chapter_costs()["worlds"]
    chapters = [f"{i:02d}" for i in range(10)]
    for settings in ("tiny", "celeba-hq"):
        assert sorted(worlds[settings]) == chapters and all(worlds[settings][c]["evals"] >= 0 for c in chapters)
        assert worlds[settings]["05"]["evals"] > 1000  # fine-tuning: Alg. 1 over N latents
    assert worlds["tiny"]["04"]["evals"] > 1000  # chapter 04 fine-tunes twice (Alg. 1, global vs directional loss)
    assert "UNet image-evaluations" in chapter_budget("05", dclip.world("celeba-hq"))
    assert "T4" in chapter_budget("05", dclip.world("celeba-hq"))
    assert "no measured cost" in chapter_budget("05", dclip.world("smoke"))
