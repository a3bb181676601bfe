"""The grader (python -m dclip.grade) on the instructor and student editions of the chapters' Your-turn cells, on
notebooks with known mistakes and on an endless loop: one row a student, one column a check, the checks' messages."""

import csv
import re
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from dclip import editions, grade

pytestmark = pytest.mark.slow  # a subprocess (torch, dclip) per student

CHAPTERS = [p for p in editions.chapters() if "01" <= p.stem[:2] <= "08"]
COLUMNS = {
    "01_ddpm/check_q_sample",
    "02_ddim_and_the_ode/check_ddim_step",
    "03_ddim_inversion/check_ddim_invert",
    "04_clip_guidance/check_directional_loss",
    "05_finetuning/check_alg1_iteration",
    "06_manipulation_and_evaluation/check_manipulation",
    "07_translation_and_strokes/check_to_pretrained_domain",
    "08_noise_combination/check_mixing",
}


def instructor(path: Path) -> nbformat.NotebookNode:
    """The chapter as the instructor edition has it: marked (dclip.editions.mark, where it is not yet)."""
    return editions.mark(nbformat.read(path, as_version=4))


def with_solution(nb: nbformat.NotebookNode, body: str) -> nbformat.NotebookNode:
    """``nb`` whose first Your-turn cell has ``body`` (indented by four spaces) as the solution."""
    cell = next(c for c in nb.cells if editions.is_your_turn(c))
    cell.source = cell.source.split("### BEGIN SOLUTION")[0] + "### BEGIN SOLUTION\n" + body + "\n    ### END SOLUTION"
    return nb


MISTAKES = {
    "01_ddpm": """    a = schedule.alpha_bar_at(t).reshape(-1, 1, 1, 1)
    return (1 - a).sqrt() * x0 + a.sqrt() * noise""",
    "02_ddim_and_the_ode": "    return dclip.ddim.ddim_step(eps_model, x_t, t, t_next, schedule)[0]",
    "03_ddim_inversion": """    taus = dclip.schedule.time_sequence(S_for, t0, schedule.T)
    x = x0  # the same tensor: the in-place steps below change the caller's x0
    for t, t_next in zip([-1] + taus[:-1], taus):
        a_t, a_next = float(schedule.alpha_bar_at(t)), float(schedule.alpha_bar_at(t_next))
        eps = eps_model(x, torch.full((len(x),), max(t, 0)))
        x -= (1 - a_t) ** 0.5 * eps
        x /= a_t**0.5
        x *= a_next**0.5
        x += (1 - a_next) ** 0.5 * eps
    return x""",
    "05_finetuning": """    a = lambda t: float(model.schedule.alpha_bar_at(t))
    x = x_t0
    for t, t_next in generation_pairs(S_gen, t0, model.schedule.T):
        eps = model(x, torch.full((len(x),), t))
        f = (x - (1 - a(t)) ** 0.5 * eps) / a(t) ** 0.5
        x = a(t_next) ** 0.5 * f + (1 - a(t_next)) ** 0.5 * eps
    delta_i = clip.encode_image(x) - clip.encode_image(x0)
    loss = (1 - F.cosine_similarity(delta_i, delta_t[None], dim=-1)).mean() + lambda_l1 * (x - x0).abs().sum()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()""",
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """One grading run: the instructor edition (folder ``instructor``), the student edition (``student``) and four
    chapters with known mistakes (``mistakes``), each a folder of chapter-named notebooks."""
    root = tmp_path_factory.mktemp("submissions")
    paths = []
    for path in CHAPTERS:
        for student, nb in (("instructor", instructor(path)), ("student", editions.student_edition(instructor(path)))):
            (root / student).mkdir(exist_ok=True)
            nbformat.write(nb, root / student / path.name)
            paths.append(root / student / path.name)
        if path.stem in MISTAKES:
            (root / "mistakes").mkdir(exist_ok=True)
            nbformat.write(with_solution(instructor(path), MISTAKES[path.stem]), root / "mistakes" / path.name)
            paths.append(root / "mistakes" / path.name)
    out = root / "out"
    assert grade.main([*map(str, paths), "--out", str(out), "--timeout", "60"]) == 0
    with open(out / "grades.csv") as f:
        rows = {row["student"]: row for row in csv.DictReader(f)}
    return rows, out


def test_the_instructor_edition_passes_every_check(graded):
    rows, _ = graded
    assert set(rows) == {"instructor", "student", "mistakes"}
    columns = set(rows["instructor"]) - {"student"}
    assert COLUMNS <= columns, "one column a check of every chapter"
    assert {column: rows["instructor"][column] for column in columns} == dict.fromkeys(columns, "pass")


def test_the_student_edition_is_not_implemented_yet_everywhere(graded):
    rows, out = graded
    columns = set(rows["student"]) - {"student"}
    for column in columns:
        assert rows["student"][column].startswith("fail: TO DO "), rows["student"][column]
        assert re.search(r"not implemented yet: write my_\w+ in the cell above", rows["student"][column])
    assert "write my_q_sample in the cell above" in rows["student"]["01_ddpm/check_q_sample"]
    assert (out / "feedback" / "student.md").read_text().count("not implemented yet") == len(columns) >= len(COLUMNS)


def test_known_mistakes_get_their_hints_in_the_csv_and_the_feedback(graded):
    rows, out = graded
    mistakes = rows["mistakes"]
    assert "yours has them swapped" in mistakes["01_ddpm/check_q_sample"]
    assert (
        "write it from the equations, not by calling dclip.ddim.ddim_step"
        in mistakes["02_ddim_and_the_ode/check_ddim_step"]
    )
    assert "changed its input x0 in place" in mistakes["03_ddim_inversion/check_ddim_invert"]
    assert "the L1 term written as a sum over pixels" in mistakes["05_finetuning/check_alg1_iteration"]
    assert mistakes["04_clip_guidance/check_directional_loss"] == "missing"
    feedback = (out / "feedback" / "mistakes.md").read_text()
    assert feedback.startswith("# Feedback for mistakes\n")
    assert "- **01_ddpm/check_q_sample**: fail\n\n  DIFFERS  q_sample (Eq. 1): with t=300" in feedback
    assert "- **04_clip_guidance/check_directional_loss**: fail\n\n  missing: no such function" in feedback


LOOP = """# Your turn: Eq. 14.
def alpha(schedule, t):  # a helper the next exercise uses
    return schedule.alpha_bar_at(t).reshape(-1, 1, 1, 1)

def my_mixing(eps_models, gammas):
    ### BEGIN SOLUTION
    while True:
        pass
    ### END SOLUTION"""

AFTER_LOOP = """# Your turn: Eq. 1.
def my_q_sample(x0, t, schedule, noise):
    ### BEGIN SOLUTION
    a = alpha(schedule, t)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise
    ### END SOLUTION"""


def test_an_endless_loop_times_out_and_the_next_check_still_runs(tmp_path):
    """A notebook named after its student (``loop.ipynb``); its chapter comes from the title cell's badge. The
    second exercise uses a helper of the first: the worker started after the timeout runs the earlier cell too."""
    nb = new_notebook(
        cells=[
            new_markdown_cell(
                "# 08 [badge](https://colab.research.google.com/github/o/r/blob/main/notebooks/08_x.ipynb)"
            ),
            new_code_cell("import torch\nimport dclip\nheavy = dclip.world()  # never run by the grader"),
            new_code_cell(LOOP),
            new_code_cell("print(dclip.exercises.check_mixing(my_mixing))"),
            new_code_cell(AFTER_LOOP),
            new_code_cell("print(dclip.exercises.check_q_sample(my_q_sample))"),
        ]
    )
    nbformat.write(nb, tmp_path / "loop.ipynb")
    table = grade.grade([tmp_path / "loop.ipynb"], tmp_path / "out", timeout=3)
    assert table == {
        "loop": {
            "08_x/check_mixing": "fail: timed out after 3 s (an endless loop?)",
            "08_x/check_q_sample": "pass",
        }
    }
