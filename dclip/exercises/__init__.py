"""Checks for the code students write in the chapters: each compares a student's function with dclip's.

    def my_ddim_step(eps_model, x_t, t, t_next, schedule): ...
    check_ddim_step(my_ddim_step)   # OK  ddim_step (Eq. 12/13): matches dclip.ddim.ddim_step on 4 inputs ...

Every check takes the student's callable and returns a :class:`Check`. Inputs are small (2 x 3 x 8 x 8), float64
and drawn from a seeded generator (the global RNG is left alone); the noise predictors are closed-form or a tiny
conv net and the CLIP a fixed random stand-in, so a check runs in milliseconds on a CPU with no download.
A function that raises, returns no tensor or the wrong shape, or differs gets ``passed=False`` and a message with
the input, the largest difference and where it is, and a hint when the output matches a known mistake. It fails
as well when it calls the dclip functions the exercise asks the student to write (each check's docstring names
them), or changes one of its input tensors in place; the student edition's stub (``NotImplementedError``) gives
"not implemented yet" (:mod:`dclip.exercises.harness`).
"""

from dclip.exercises.editing import check_manipulation, check_mixing, check_to_pretrained_domain
from dclip.exercises.harness import TOLERANCE, Check
from dclip.exercises.sampling import check_ddim_invert, check_ddim_step, check_q_sample
from dclip.exercises.training import check_alg1_iteration, check_alg2_step, check_directional_loss

__all__ = [
    "TOLERANCE",
    "Check",
    "check_alg1_iteration",
    "check_alg2_step",
    "check_ddim_invert",
    "check_ddim_step",
    "check_directional_loss",
    "check_manipulation",
    "check_mixing",
    "check_q_sample",
    "check_to_pretrained_domain",
]
