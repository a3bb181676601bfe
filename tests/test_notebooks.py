"""Every notebook of the course: its shape, its Colab set-up, and outputs stored from a top-to-bottom run."""

import json
import re
from pathlib import Path

import pytest

from dclip.colab import CELL

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
MAX_BYTES = 1_500_000


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def test_the_course_has_every_chapter():
    names = [p.stem for p in NOTEBOOKS]
    assert names == [
        "00_setup_and_tour",
        "01_ddpm",
        "02_ddim_and_the_ode",
        "03_ddim_inversion",
        "04_clip_guidance",
        "05_finetuning",
        "06_manipulation_and_evaluation",
        "07_translation_and_strokes",
        "08_noise_combination",
        "09_hyperparameters",
    ]


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
#: The controls whose slider is the return step t0 (or the noising step t) or a weight gamma / its switch time.
T0_OR_GAMMA_CONTROLS = (
    "noising_control",
    "reconstruction_control",
    "edit_t0_control",
    "stroke_t0_control",
    "switch_control",
    "combination_control",
)


def markdown(path: Path) -> list[str]:
    return [source(x) for x in cells(path) if x["cell_type"] == "markdown"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_opens_with_learning_goals_and_ends_with_a_summary_and_exercises_with_solutions(path):
    md = markdown(path)
    goals = md[1]
    assert goals.startswith("## Learning goals") and len(re.findall(r"^[-*] ", goals, flags=re.M)) >= 3, "goals first"
    heads = [m.splitlines()[0] for m in md]
    assert "## Summary" in heads and "## Exercises" in heads
    assert heads.index("## Summary") < heads.index("## Exercises")
    exercises = "\n".join(md[heads.index("## Exercises") :])
    numbered = re.findall(r"^\s*(\d+)\. ", exercises, flags=re.M)
    assert len(set(numbered)) >= 3, "at least three numbered exercises"
    solutions = re.findall(r"<details>\s*<summary>\s*Solution", exercises)
    assert len(solutions) >= len(set(numbered)), "every exercise has a solution the student can open"


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if "01" <= p.stem[:2] <= "08"], ids=lambda p: p.stem)
def test_student_writes_a_step_of_the_method_and_checks_it_against_dclip(path):
    c = cells(path)
    written = [i for i, x in enumerate(c) if x["cell_type"] == "code" and source(x).startswith("# Your turn")]
    assert written, "a cell where the student writes the method"
    for i in written:
        name = re.search(r"^def (my_\w+)\(", source(c[i]), flags=re.M).group(1)
        assert c[i - 1]["cell_type"] == "markdown" and "$" in source(c[i - 1]), "the equation next to the code"
        check = c[i + 1]
        assert check["cell_type"] == "code" and re.search(rf"check_\w+\({name}\b", source(check))
        printed = "".join("".join(o.get("text", "")) for o in check["outputs"])
        assert printed.startswith("OK "), f"the stored check of {name} passes: {printed[:120]!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_figure_is_followed_by_its_interpretation(path):
    c = cells(path)
    for i, x in enumerate(c):
        if x["cell_type"] == "code" and any("image/png" in o.get("data", {}) for o in x["outputs"]):
            assert i + 1 < len(c) and c[i + 1]["cell_type"] == "markdown", f"no words after {source(x)[:60]!r}"


def test_six_chapters_or_more_have_a_t0_or_gamma_control():
    with_control = [
        p.stem
        for p in NOTEBOOKS
        if any(re.search(rf"\b{name}\(", source(x)) for x in cells(p) for name in T0_OR_GAMMA_CONTROLS)
    ]
    assert len(with_control) >= 6, with_control


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_controls_ignore_their_output_and_no_stale_widget_state_is_stored(path):
    nb = json.loads(path.read_text())
    assert "widgets" not in nb["metadata"], "saved widget state shows 'model not found' when reopened"
    for x in nb["cells"]:
        if x["cell_type"] != "code":
            continue
        if re.search(r"\w+_control\(", source(x)):
            assert source(x).startswith("# NBVAL_IGNORE_OUTPUT"), source(x)[:80]
        assert not any(WIDGET_VIEW in o.get("data", {}) for o in x["outputs"]), source(x)[:80]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_title_badge_setup_and_imports_dclip(path):
    assert re.fullmatch(r"\d\d_[a-z0-9_]+", path.stem)
    c = cells(path)
    assert c[0]["cell_type"] == "markdown" and source(c[0]).startswith("# ")
    assert f"notebooks/{path.name}" in source(c[0]) and "colab-badge.svg" in source(c[0])
    assert source(c[1]) == CELL, "the Colab set-up cell is dclip.colab.CELL: python tools/colab_cell.py writes it"
    assert any("import dclip" in source(x) for x in c if x["cell_type"] == "code")
    assert path.name in (path.parents[1] / "colab" / "README.md").read_text()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_executed_top_to_bottom(path):
    code = [x for x in cells(path) if x["cell_type"] == "code" and "NBVAL_SKIP" not in source(x)]
    counts = [x["execution_count"] for x in code]
    assert counts == list(range(counts[0], counts[0] + len(counts))), counts
    for x in code:
        assert not any(o.get("output_type") == "error" for o in x["outputs"])
    assert path.stat().st_size < MAX_BYTES


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_code_cells_stay_short(path):
    for x in cells(path):
        if x["cell_type"] == "code":
            assert len(source(x).splitlines()) <= 25, source(x)[:80]


def assert_every_code_cell_ran_without_error(nb) -> None:
    """Each code cell with source was executed, in order (execution counts 1, 2, ...), and has no error output."""
    code = [(i, cell) for i, cell in enumerate(nb.cells) if cell.cell_type == "code" and cell.source.strip()]
    errors = [
        f"cell {i}: {o.ename}: {o.evalue}\n{cell.source[:200]}"
        for i, cell in code
        for o in cell.outputs
        if o.output_type == "error"
    ]
    assert not errors, "\n\n".join(errors)
    counts = [cell.execution_count for _, cell in code]
    assert counts == list(range(1, len(code) + 1)), f"not every code cell ran: execution counts {counts}"


def test_the_run_check_catches_an_error_output_and_a_cell_that_did_not_run():
    import nbformat

    ran = lambda n, outputs=(): nbformat.v4.new_code_cell("x = 1", execution_count=n, outputs=list(outputs))  # noqa: E731
    error = nbformat.v4.new_output("error", ename="NameError", evalue="name 'y' is not defined", traceback=[])
    blank = nbformat.v4.new_code_cell("  ")
    assert_every_code_cell_ran_without_error(nbformat.v4.new_notebook(cells=[ran(1), blank, ran(2)]))
    with pytest.raises(AssertionError, match="cell 1: NameError: name 'y' is not defined"):
        assert_every_code_cell_ran_without_error(nbformat.v4.new_notebook(cells=[ran(1), ran(2, [error])]))
    with pytest.raises(AssertionError, match=r"not every code cell ran: execution counts \[1, None\]"):
        assert_every_code_cell_ran_without_error(nbformat.v4.new_notebook(cells=[ran(1), ran(None)]))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_student_edition_runs_the_real_worlds_code_path_in_the_smoke_world(path, tmp_path):
    """The student edition of every chapter (dclip.editions: each solution region replaced by a stub that raises
    NotImplementedError), top to bottom, in the smoke world (the real world's code on a small random UNet of its
    architecture, with the tiny CLIP): every code cell runs, in order, and none has an error output, and every
    check cell prints its "not implemented yet" verdict. Outputs are not compared, the numbers mean nothing there;
    strict nbval runs the source chapters."""
    import os

    import nbformat
    from nbclient import NotebookClient

    from dclip.editions import is_your_turn, student_edition

    env = {"DCLIP_WORLD": "smoke", "TQDM_DISABLE": "1", "MPLBACKEND": "Agg", "DCLIP_CACHE": str(tmp_path / "cache")}
    env["OMP_NUM_THREADS"] = "1"  # the smoke world's 32x32 models run several times faster on one thread
    nb = student_edition(nbformat.read(path, as_version=4), path.stem)  # a MarkingError until the chapter is marked
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        resources = {"metadata": {"path": str(tmp_path)}}
        NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=True, resources=resources).execute()
    finally:
        for k, v in before.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    assert_every_code_cell_ran_without_error(nb)
    checks = [nb.cells[i + 1] for i, cell in enumerate(nb.cells) if is_your_turn(cell)]
    for check in checks:
        printed = "".join(o.get("text", "") for o in check.outputs)
        assert printed.startswith("TO DO ") and "not implemented yet: write my_" in printed, printed[:200]
    assert bool(checks) == ("01" <= path.stem[:2] <= "08")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_code_asks_its_world_and_never_branches_on_a_world_name(path):
    code = "\n".join(source(x) for x in cells(path) if x["cell_type"] == "code")
    assert re.search(r"\.name\s*[!=]=", code) is None
    assert re.search(r"[!=]=\s*['\"](tiny|real|smoke|celeba-hq)['\"]", code) is None
    assert "dclip.tinyworld" not in code and "profile" not in code
    assert "world = dclip.world()" in code and 'world.budget("' + path.stem[:2] + '")' in code


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_cell_relies_on_a_trailing_semicolon(path):
    """nbval runs cells without storing history, where IPython no longer sees the ';' that hides a cell's value:
    a figure would be compared twice. Cells assign the value instead (``fig = dclip.show_images(...)``)."""
    import ast

    from IPython.core.displayhook import DisplayHook

    for x in cells(path):
        if x["cell_type"] != "code" or "NBVAL_SKIP" in source(x):
            continue
        body = ast.parse(source(x).replace("%matplotlib inline", "")).body
        if body and isinstance(body[-1], ast.Expr):
            assert not DisplayHook.semicolon_at_end_of_expression(source(x)), source(x)[-80:]
