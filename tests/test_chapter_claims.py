"""A chapter's prose cannot drift from its stored outputs: numbers quoted in markdown agree with what was printed.

Reads the stored notebooks (nothing is executed). THE CONVENTION a chapter follows:

1. **Quoted numbers.** In prose, a number written with a decimal point, a percent sign or a trailing ``x``
   (``0.24``, ``0.175``, ``12%``, ``1.4x``) is a *quoted number*. Integers are not (step counts, t0, seeds).
   Not read at all: math (``$...$``, ``$$...$$``), code spans and code blocks, ``<details>`` blocks (exercise
   solutions), blockquote boxes (lines starting with ``>``: the "Tiny world vs paper" boxes), and a number right
   after ``Sec.``/``Section``/``Eq.``/``Fig.``/``Table``/``App.``/``Appendix``/``Alg.``. So a number that is not
   a result of this run (the paper's values, a setting, arithmetic of the text) goes in math: ``$0.826$ s``.
2. **Interpretation cells.** A markdown cell directly after one or more code cells reads the stored outputs of
   those code cells (its *window*: the run of code cells right above it). Each quoted number in it must agree,
   to the precision it is written with, with a number printed in the window's text output (stdout or
   ``text/plain``, not a figure): ``0.24`` agrees with a printed ``0.24`` or ``0.2412``, not ``0.2462``;
   ``12%`` with a printed ``12%``, ``12.3%`` or the fraction ``0.12``; ``1.4x`` with ``1.4x`` or ``1.42``.
   **Print what you quote.**
3. **Numbers read off a figure.** A PNG cannot be read by a test. An interpretation cell whose window stores a
   figure may say so with the marker ``<!-- numbers read off the figure -->`` anywhere in the cell; its quoted
   numbers are then not compared with the text output (prefer printing them, rule 2). The marker is refused in
   a cell whose window stores no figure.
4. **The summary.** A quoted number in the cells of the ``## Summary`` section must agree with a number printed
   anywhere in the chapter or quoted in an earlier interpretation cell: the summary cannot say what the body
   does not.
5. Other markdown cells (introductions, exercises, boxes) are not compared: they state the paper and the plan.

Run ``python tests/test_chapter_claims.py notebooks/0X_*.ipynb`` to list a chapter's disagreements.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))
FIGURE_MARKER = "<!-- numbers read off the figure -->"

# a quoted number: digits.digits with an optional % or x, or digits%; not part of a word, a version or "2.7M"
QUOTED = re.compile(r"(?<![\w.])(\d+\.\d+(?:%|x)?|\d+%)(?![\w]|\.\d)")
REFERENCE = re.compile(r"(?:Sec\.|Section|Eq\.|Eqs\.|Fig\.|Table|App\.|Appendix|Alg\.)\s*$")
PRINTED = re.compile(r"(?<![\w.])[-+]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?")


@dataclass
class Disagreement:
    cell: int
    number: str
    context: str
    why: str

    def __str__(self) -> str:
        return f"cell {self.cell}: {self.number!r} {self.why} ... {self.context} ..."


def prose(markdown: str) -> str:
    """The markdown without math, code, solution blocks and blockquote boxes (rule 1)."""
    for pattern in (r"```.*?```", r"<details>.*?</details>", r"\$\$.*?\$\$", r"\$[^$\n]*\$", r"`[^`\n]*`"):
        markdown = re.sub(pattern, " ", markdown, flags=re.S)
    return "\n".join(line for line in markdown.split("\n") if not line.lstrip().startswith(">"))


def quoted_numbers(markdown: str) -> list[tuple[str, str]]:
    """(number, context) for every quoted number of the cell's prose."""
    text = prose(markdown)
    found = []
    for m in QUOTED.finditer(text):
        if REFERENCE.search(text[max(0, m.start() - 12) : m.start()]):
            continue
        found.append((m.group(1), " ".join(text[max(0, m.start() - 50) : m.end() + 30].split())))
    return found


def printed_numbers(text: str) -> list[float]:
    values = []
    for m in PRINTED.finditer(text):
        try:
            values.append(float(m.group(0).replace(",", "")))
        except ValueError:
            continue
    return values


def agrees(number: str, printed: list[float]) -> bool:
    """``number`` as written (0.24, 12%, 1.4x) equals one of ``printed`` rounded to its precision (rule 2)."""
    core = number.rstrip("%x")
    decimals = len(core.split(".")[1]) if "." in core else 0
    value, tolerance = float(core), 0.5 * 10**-decimals + 1e-9
    scales = (1.0, 100.0) if number.endswith("%") else (1.0,)
    return any(abs(abs(p) * k - value) <= tolerance for p in printed for k in scales)


def _text_output(cell: dict) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append("".join(out.get("text", "")))
        elif "data" in out and "image/png" not in out["data"] and "text/plain" in out["data"]:
            parts.append("".join(out["data"]["text/plain"]))
    return "".join(parts)


def _has_figure(cell: dict) -> bool:
    return any("image/png" in out.get("data", {}) for out in cell.get("outputs", []))


def disagreements(notebook: dict) -> list[Disagreement]:
    """Every quoted number that breaks the convention above, in one notebook (a dict as stored)."""
    cells = notebook["cells"]
    found: list[Disagreement] = []
    everything_printed: list[float] = []
    everything_quoted: list[float] = []
    in_summary = False
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "code":
            everything_printed += printed_numbers(_text_output(cell))
            continue
        if cell["cell_type"] != "markdown":
            continue
        source = "".join(cell["source"])
        heading = re.match(r"\s*(#{1,3})\s+(.*)", source)
        if heading and len(heading.group(1)) <= 2:
            in_summary = heading.group(2).strip().lower().startswith("summary")
        numbers = quoted_numbers(source)
        window = []
        j = i - 1
        while j >= 0 and cells[j]["cell_type"] == "code":
            window.append(cells[j])
            j -= 1
        if in_summary:
            for number, context in numbers:
                if not agrees(number, everything_printed + everything_quoted):
                    found.append(Disagreement(i, number, context, "in the summary is printed and quoted nowhere above"))
            continue
        if not window:
            continue  # rule 5
        if FIGURE_MARKER in source:
            if not any(_has_figure(c) for c in window):
                found.append(Disagreement(i, FIGURE_MARKER, source[:60], "is used but the cells above store no figure"))
        else:
            printed = printed_numbers("".join(_text_output(c) for c in reversed(window)))
            for number, context in numbers:
                if not agrees(number, printed):
                    found.append(Disagreement(i, number, context, "is not printed by the code cell(s) right above"))
        everything_quoted += [float(n.rstrip("%x")) for n, _ in numbers]
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_numbers_quoted_in_a_chapter_agree_with_its_stored_outputs(path):
    problems = disagreements(json.loads(path.read_text()))
    assert not problems, f"{path.name}: prose disagrees with the stored outputs:\n" + "\n".join(map(str, problems))


# ---- the test's own test: synthetic notebooks whose prose contradicts (or agrees with) their outputs ----


def _notebook(*cells: tuple[str, str, str | None]) -> dict:
    """(kind, source, printed text or "figure") -> a notebook dict as stored."""
    out = []
    for kind, source, printed in cells:
        cell = {"cell_type": kind, "metadata": {}, "source": source}
        if kind == "code":
            if printed == "figure":
                cell["outputs"] = [{"output_type": "display_data", "data": {"image/png": "", "text/plain": "<Figure>"}}]
            else:
                cell["outputs"] = (
                    [] if printed is None else [{"output_type": "stream", "name": "stdout", "text": printed}]
                )
        out.append(cell)
    return {"cells": out}


DRIFT = _notebook(
    ("code", "print(d10, d50)", "MAE to DDIM-1000: DDIM-10 0.2412, DDIM-50 0.1751 (ratio 1.38)\n"),
    ("markdown", "DDIM-10 is 0.31 from the reference against 0.175 for DDIM-50 (1.8x).", None),
)


def test_drift_between_prose_and_printed_output_is_caught():
    problems = disagreements(DRIFT)
    assert [p.number for p in problems] == ["0.31", "1.8x"]  # 0.175 agrees with the printed 0.1751
    assert all(p.cell == 1 and "not printed" in p.why for p in problems)


def test_prose_that_quotes_its_output_to_its_precision_passes():
    good = _notebook(
        ("code", "print(d10, d50)", "MAE to DDIM-1000: DDIM-10 0.2412, DDIM-50 0.1751 (ratio 1.38), 12.3% clipped\n"),
        (
            "markdown",
            "DDIM-10 is 0.24 away against 0.175 (1.4x); 12% of pixels clipped; see Sec. 4.5 and $0.99$.",
            None,
        ),
    )
    assert disagreements(good) == []
    assert agrees("0.24", [0.2412]) and not agrees("0.24", [0.2462]) and agrees("12%", [0.12])
    assert not agrees("1.4x", [1.46]) and agrees("1.5x", [1.46])


def test_the_summary_cannot_quote_what_the_body_does_not_print():
    nb = _notebook(
        ("code", "print(order)", "observed order: 0.98\n"),
        ("markdown", "The observed order is 0.98.", None),
        ("markdown", "## Summary\n- DDIM has order 0.98; DDIM-10 is 2.5x as far as DDIM-50.", None),
    )
    assert [(p.cell, p.number) for p in disagreements(nb)] == [(2, "2.5x")]


def test_the_figure_marker_needs_a_figure_and_skips_only_its_own_cell():
    read_off = _notebook(
        ("code", "plot(...)", "figure"),
        ("markdown", f"The bars show 0.66 against 0.34. {FIGURE_MARKER}", None),
        ("code", "print(x)", "success 0.70\n"),
        ("markdown", "Success is 0.66.", None),
    )
    assert [(p.cell, p.number) for p in disagreements(read_off)] == [(3, "0.66")]
    misused = _notebook(("code", "print(x)", "success 0.70\n"), ("markdown", f"Success 0.66. {FIGURE_MARKER}", None))
    assert [p.why for p in disagreements(misused)] == ["is used but the cells above store no figure"]


def test_math_code_solutions_boxes_and_references_are_not_quotes():
    md = (
        "The paper's $0.826$ s, `lr=4e-6 * 1.2`, Sec. 2.2, Table 4.5, a 2.7M-parameter model, version 1.2.3\n"
        "> **Tiny world vs paper.** the paper reports 0.17.\n<details><summary>Solution</summary>0.010051</details>"
    )
    assert quoted_numbers(md) == []
    assert [n for n, _ in quoted_numbers("rises from 0.43 to 0.93 (2.2x, 35%)")] == ["0.43", "0.93", "2.2x", "35%"]


if __name__ == "__main__":
    for name in sys.argv[1:]:
        for problem in disagreements(json.loads(Path(name).read_text())):
            print(f"{name}: {problem}")
