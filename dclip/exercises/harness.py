"""The machinery of the checks: the verdict (:class:`Check`), one input (:class:`Case`) and :func:`run_check`,
which runs the student's function on each input while dclip's reference functions are off limits.

A check fails, besides on a different output, when the student's function

- raises ``NotImplementedError`` (the student edition's stub): "not implemented yet", nothing else;
- calls one of the dclip functions the exercise asks them to write (found by the identity of the function's code
  object while the student's code runs, so ``dclip.q_sample``, ``from dclip.ddpm import q_sample``, a lambda or a
  ``functools.partial`` around it are all caught, also when the call is nested in another dclip function);
- changes one of its input tensors in place (:func:`call` compares each input before and after).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import FrameType

import numpy as np
import torch

#: The largest |difference| from dclip's output that passes (on values of order 1; relative for a weight change):
#: arithmetic in float32 passes, every known mistake fails by far more.
TOLERANCE = 1e-5
SHAPE = (2, 3, 8, 8)

Output = torch.Tensor | dict[str, torch.Tensor]
#: Looks at the student's output (None when their function raised) and returns a hint, or None if it does not apply.
Diagnosis = Callable[[object], str | None]


@dataclass(frozen=True, repr=False)
class Check:
    """The verdict of one check: ``passed``, the largest |difference| from dclip's output (``inf`` when there was
    no output to compare), the ``tolerance`` it was held to and a ``message``; prints as one line, starting with
    ``OK``, ``DIFFERS`` or, for the stub of the student edition (``implemented=False``), ``TO DO``."""

    name: str
    passed: bool
    max_error: float
    tolerance: float
    message: str
    implemented: bool = True

    @property
    def verdict(self) -> str:
        return "OK" if self.passed else "DIFFERS" if self.implemented else "TO DO"

    def __str__(self) -> str:
        return f"{self.verdict}  {self.name}: {self.message}"

    __repr__ = __str__


class Problem(Exception):
    """What is wrong with the student's output, found by a check (not raised by the student's code)."""


class InPlaceChange(Problem):
    """The student's function changed an input; the message says which, and no output hint applies."""


@dataclass
class Case:
    """One input: ``label`` names it, ``yours`` runs the student's function on it, ``expected`` is dclip's output;
    a difference over ``tolerance`` fails, with the first hint the ``diagnoses`` give, else ``hint``."""

    label: str
    yours: Callable[[], object]
    expected: Output
    diagnoses: Sequence[Diagnosis] = field(default_factory=list)
    hint: str = ""
    tolerance: float = TOLERANCE


def qualified_name(fn: Callable) -> str:
    """``dclip.ddpm.q_sample`` for dclip's q_sample."""
    return f"{fn.__module__}.{fn.__qualname__}"


class Forbidden:
    """A context in which calls of the ``functions`` (by the identity of their code objects) are recorded:
    ``called`` is the first one called (the outermost, when one calls another), or None. It profiles Python
    calls of this thread (``sys.setprofile``), chaining to a profiler already set."""

    def __init__(self, functions: Iterable[Callable]):
        self.codes: dict[int, Callable] = {id(f.__code__): f for f in functions}
        self.called: Callable | None = None

    def _profile(self, frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and self.called is None and id(frame.f_code) in self.codes:
            self.called = self.codes[id(frame.f_code)]
        if self._previous is not None:
            self._previous(frame, event, arg)

    def __enter__(self) -> Forbidden:
        self._previous = sys.getprofile()
        sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.setprofile(self._previous)


def call(fn: Callable, inputs: dict[str, object]) -> object:
    """``fn(*inputs.values())``, then a :class:`Problem` naming the first input tensor (or tensor in a list input)
    that ``fn`` changed in place. The caller passes copies it does not use again."""
    before = {name: _snapshot(value) for name, value in inputs.items()}
    out = fn(*inputs.values())
    for name, value in inputs.items():
        changed = _changed(value, before[name])
        if changed is not None:
            where = name + (f"[{changed}]" if changed else "")
            raise InPlaceChange(
                f"your function changed its input {where} in place (an in-place operation such as .mul_(), +=, "
                f"or an indexed assignment); compute into a new tensor and leave {name} as it was given"
            )
    return out


def _snapshot(value: object) -> object:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (list, tuple)):
        return [v.detach().clone() if isinstance(v, torch.Tensor) else None for v in value]
    return None


def _changed(value: object, before: object) -> str | None:
    """None when unchanged; "" when the tensor changed, "k" when the k-th tensor of a list input did."""
    if isinstance(value, torch.Tensor):
        return None if torch.equal(value.detach(), before) else ""
    if isinstance(value, (list, tuple)):
        for k, (v, b) in enumerate(zip(value, before)):
            if b is not None and not (isinstance(v, torch.Tensor) and torch.equal(v.detach(), b)):
                return str(k)
    return None


def difference(yours: object, expected: Output) -> tuple[float, str]:
    """The largest |yours - expected| and where it is; a :class:`Problem` unless ``yours`` has the same type and
    shapes."""
    if isinstance(expected, torch.Tensor):
        if not isinstance(yours, torch.Tensor):
            raise Problem(f"your function returned a {type(yours).__name__}, not a tensor")
        yours, expected = {"": yours}, {"": expected}
    worst, where = -1.0, ""
    for key, e in expected.items():
        y = yours[key]
        if y.shape != e.shape:
            raise Problem(f"your function returned shape {tuple(y.shape)} where dclip's gives {tuple(e.shape)}")
        err = (y.detach().to(e) - e).abs()
        err = err.masked_fill(err.isnan(), math.inf)
        if err.numel() and float(err.max()) > worst:
            idx = tuple(int(i) for i in np.unravel_index(int(err.argmax()), e.shape))
            worst = float(err.max())
            at = (f" in {key!r}" if key else "") + (f" at index {idx}" if idx else "")
            where = f"max |difference| {worst:.3g}{at}; yours gave {float(y[idx]):.3g}, dclip {float(e[idx]):.3g}"
    return worst, where


def matches(variant: Callable[[], Output], hint: str, tolerance: float = TOLERANCE) -> Diagnosis:
    """A diagnosis: ``hint`` when the student's output equals what a known mistake (``variant``) gives."""

    def diagnose(yours: object) -> str | None:
        if yours is None:  # the student's function raised
            return None
        try:
            return hint if difference(yours, variant())[0] <= tolerance else None
        except Problem:
            return None

    return diagnose


def _first_line(e: BaseException, limit: int = 200) -> str:
    text = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"


def run_check(
    name: str,
    reference: str,
    fn: Callable,
    cases: Sequence[Case],
    *,
    forbidden: Sequence[Callable],
) -> Check:
    """Run the cases in order, each with the ``forbidden`` dclip functions off limits to the student's code; the
    first that differs, calls a forbidden function or raises ``NotImplementedError`` gives the verdict."""
    worst = 0.0
    for case in cases:
        tolerance = case.tolerance
        yours, hinted = None, True
        guard = Forbidden(forbidden)
        try:
            with guard:
                yours = case.yours()
            error, where = difference(yours, case.expected)
        except NotImplementedError:
            written = getattr(fn, "__name__", "your function")
            message = f"not implemented yet: write {written} in the cell above (the stub raises NotImplementedError)"
            return Check(name, False, math.inf, tolerance, message, implemented=False)
        except Problem as e:
            error, where, hinted = math.inf, str(e), not isinstance(e, InPlaceChange)
        except Exception as e:  # the student's code raised: report it, do not crash the notebook
            error, where = math.inf, f"your function raised {_first_line(e)}"
        if guard.called is not None:
            called = qualified_name(guard.called)
            message = (
                f"{case.label}, your function called {called}: write it from the equations, not by calling {called}"
            )
            return Check(name, False, math.inf, tolerance, message)
        if not error <= tolerance:
            hint = next((h for d in case.diagnoses if (h := d(yours)) is not None), case.hint) if hinted else ""
            return Check(name, False, error, tolerance, f"{case.label}, {where}" + (f". Hint: {hint}" if hint else ""))
        worst = max(worst, error)
    plural, tolerance = "s" * (len(cases) > 1), max(case.tolerance for case in cases)
    return Check(
        name, True, worst, tolerance, f"matches {reference} on {len(cases)} input{plural} (within {tolerance:.0e})"
    )


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(g: torch.Generator) -> torch.Tensor:
    """Random images in [-1, 1], float64, (2, 3, 8, 8)."""
    return torch.rand(SHAPE, generator=g, dtype=torch.float64) * 2 - 1


def per_image(a: torch.Tensor) -> torch.Tensor:
    return a.reshape(-1, 1, 1, 1)


class Recorder:
    """A noise predictor that remembers the times it is asked about."""

    def __init__(self, eps_model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        self.eps_model, self.times = eps_model, []

    def __call__(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        self.times.append(int(torch.as_tensor(t).flatten()[0]))
        return self.eps_model(x, t)
