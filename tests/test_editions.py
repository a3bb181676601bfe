"""The student and instructor editions (dclip.editions) on synthetic chapters marked as the contract says, and the
agreement with nbgrader's own ClearSolutions and metadata validation."""

import copy
import json
import re

import nbformat
import pytest
import torch
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from dclip import editions

YOUR_TURN = """# Your turn: write the forward noising of Eq. 1.
import math

def my_q_sample(x0, t, schedule, noise):
    \"\"\"x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise.\"\"\"
    ### BEGIN SOLUTION
    a = schedule.alpha_bar_at(t).reshape(-1, 1, 1, 1)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise
    ### END SOLUTION"""

EXERCISES = """## Exercises

1. Why does the noise grow?
<!-- BEGIN SOLUTION -->
<details><summary>Solution</summary>

Because alpha_bar falls.
</details>
<!-- END SOLUTION -->

2. What is alpha_bar(-1)?
<!-- BEGIN SOLUTION -->
<details><summary>Solution</summary>1.</details>
<!-- END SOLUTION -->"""


def nbgrader(grade_id, solution=False, locked=False, grade=False, **more):
    meta = {"solution": solution, "grade": grade, "locked": locked, "task": False, "grade_id": grade_id}
    return {"nbgrader": {**meta, **more, "schema_version": 3}}


def chapter(your_turn=YOUR_TURN, exercises=EXERCISES, check_meta=True):
    """A small marked chapter: a figure cell with an output, a Your-turn cell, its check cell (with a stored
    verdict), and the exercises with two solution regions."""
    figure = new_code_cell("print('a figure')", execution_count=1, outputs=[new_output("stream", text="a figure\n")])
    check = new_code_cell(
        "from dclip.exercises import check_q_sample\nprint(check_q_sample(my_q_sample))",
        execution_count=3,
        outputs=[new_output("stream", text="OK  q_sample (Eq. 1): matches\n")],
        metadata=nbgrader("check_my_q_sample", locked=True) if check_meta else {},
    )
    return new_notebook(
        cells=[
            new_markdown_cell("# 01 A chapter"),
            figure,
            new_code_cell(your_turn, execution_count=2, metadata=nbgrader("my_q_sample", solution=True)),
            check,
            new_markdown_cell(exercises, metadata=nbgrader("exercises", solution=True, grade=True, points=0)),
        ],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )


def test_the_stub_replaces_exactly_the_region_at_its_indentation():
    student = editions.student_edition(chapter())
    assert student.cells[2].source == YOUR_TURN.split("    ### BEGIN")[0] + (
        "    # YOUR CODE HERE\n    raise NotImplementedError()"
    )
    source = chapter()
    assert [c.source for i, c in enumerate(student.cells) if i != 2 and i != 4] == [
        c.source for i, c in enumerate(source.cells) if i != 2 and i != 4
    ]


def test_the_markdown_solutions_are_removed_and_the_exercises_kept():
    text = editions.student_edition(chapter()).cells[4].source
    assert "Solution" not in text and "SOLUTION" not in text and "alpha_bar falls" not in text
    assert text == "## Exercises\n\n1. Why does the noise grow?\n\n2. What is alpha_bar(-1)?"


def test_the_outputs_of_the_your_turn_and_check_cells_are_cleared_and_the_others_kept():
    source, student = chapter(), editions.student_edition(chapter())
    assert student.cells[1].outputs == source.cells[1].outputs and student.cells[1].execution_count == 1
    for i in (2, 3):
        assert student.cells[i].outputs == [] and student.cells[i].execution_count is None
    assert source.cells[3].outputs, "the source is left as it was"


def test_the_instructor_edition_is_the_source_and_the_student_edition_a_valid_notebook(tmp_path):
    path = tmp_path / "src" / "01_chapter.ipynb"
    path.parent.mkdir()
    nbformat.write(chapter(), path)
    (instructor,) = editions.build("instructor", tmp_path / "instructor", [path])
    assert instructor.read_bytes() == path.read_bytes()
    (student,) = editions.build("student", tmp_path / "student", [path])
    nbformat.validate(nbformat.read(student, as_version=4))
    assert "NotImplementedError" in student.read_text() and "alpha_bar falls" not in student.read_text()


@pytest.mark.parametrize(
    ("your_turn", "message"),
    [
        (YOUR_TURN.replace("    ### END SOLUTION", ""), "is never closed by '### END SOLUTION'"),
        (YOUR_TURN.replace("    ### BEGIN SOLUTION\n", ""), "'### END SOLUTION' without a '### BEGIN SOLUTION'"),
        (YOUR_TURN.replace("    a = ", "    ### BEGIN SOLUTION\n    a = "), "inside a region opened at line 6"),
        (YOUR_TURN.replace("### BEGIN SOLUTION", "# BEGIN SOLUTION here"), "is not a delimiter of a code cell"),
        (YOUR_TURN.replace("    ### BEGIN SOLUTION\n", "").replace("    ### END SOLUTION", ""), "without a BEGIN/END"),
    ],
    ids=["no-end", "no-begin", "nested", "malformed", "no-markers"],
)
def test_unpaired_or_missing_markers_are_refused_with_the_cell_named(your_turn, message):
    with pytest.raises(editions.MarkingError, match="01_x, cell 2 ") as e:
        editions.student_edition(chapter(your_turn), "01_x")
    assert message in str(e.value)


def test_a_your_turn_cell_without_markers_or_metadata_fails_validation():
    nb = chapter(YOUR_TURN.replace("    ### BEGIN SOLUTION\n", "").replace("    ### END SOLUTION", ""))
    nb.cells[2].metadata = {}
    with pytest.raises(editions.MarkingError, match="a Your-turn cell without solution markers"):
        editions.validate(nb, "01_x")
    with pytest.raises(editions.MarkingError, match="a check cell needs the metadata"):
        editions.validate(chapter(check_meta=False), "01_x")
    unmarked_md = chapter()
    unmarked_md.cells[4].metadata = {}
    with pytest.raises(editions.MarkingError, match="a markdown cell with solution regions"):
        editions.validate(unmarked_md, "01_x")


def test_the_validator_lists_each_chapters_solution_and_check_cells():
    marking = editions.validate(chapter(), "01_x")
    assert (marking.solutions, marking.checks, marking.exercise_solutions) == (
        ["my_q_sample"],
        ["check_my_q_sample"],
        2,
    )
    assert str(marking) == (
        "01_x: solution cells ['my_q_sample']; check cells ['check_my_q_sample']; 2 exercise solution(s) in markdown"
    )


def test_a_student_editions_your_turn_cell_defines_a_function_whose_check_is_not_implemented_yet():
    student = editions.student_edition(chapter())
    namespace = {"torch": torch}
    exec(student.cells[2].source, namespace)
    exec(student.cells[3].source.replace("print(", "verdict = ("), namespace)
    assert str(namespace["verdict"]) == (
        "TO DO  q_sample (Eq. 1): not implemented yet: write my_q_sample in the cell above (the stub raises "
        "NotImplementedError)"
    )


def test_the_command_line_builds_and_validates(tmp_path, capsys):
    path = tmp_path / "01_chapter.ipynb"
    nbformat.write(chapter(), path)
    assert editions.main(["student", str(tmp_path / "s"), "--notebooks", str(path)]) == 0
    assert editions.main(["validate", "--notebooks", str(path)]) == 0
    assert "01_chapter: solution cells ['my_q_sample']" in capsys.readouterr().out
    nbformat.write(chapter(YOUR_TURN.replace("    ### END SOLUTION", "")), path)
    assert editions.main(["instructor", str(tmp_path / "i"), "--notebooks", str(path)]) == 1
    assert "is never closed" in capsys.readouterr().err


# nbgrader (a dev dependency): its generate_assignment preprocessors accept the contract and stub as we do.


def nbgrader_release(nb):
    """nbgrader's generate_assignment preprocessors that need no course database, in its order."""
    from nbgrader.preprocessors import CheckCellMetadata, ClearOutput, ClearSolutions, ComputeChecksums, LockCells

    resources = {}
    for pre in (LockCells(), ClearSolutions(), ClearOutput(), CheckCellMetadata(), ComputeChecksums()):
        nb, resources = pre.preprocess(nb, resources)
    return nb


def test_nbgrader_clears_the_synthetic_chapter_as_the_student_edition_does():
    pytest.importorskip("nbgrader")
    theirs, ours = nbgrader_release(chapter()), editions.student_edition(chapter())
    assert theirs.cells[2].source == ours.cells[2].source
    assert "YOUR ANSWER HERE" in theirs.cells[4].source and "alpha_bar falls" not in theirs.cells[4].source


def test_nbgrader_refuses_the_markdown_solution_cell_without_grade_and_points():
    """Why the contract marks a markdown solution cell as graded with points: nbgrader's schema demands it."""
    pytest.importorskip("nbgrader")
    from nbgrader.nbgraderformat import ValidationError

    nb = chapter()
    nb.cells[4].metadata = nbgrader("exercises", solution=True)
    with pytest.raises(ValidationError):
        nbgrader_release(nb)


CHAPTERS = editions.chapters()


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_nbgrader_releases_every_chapter_as_the_student_edition_does(path):
    """Each chapter (marked by :func:`dclip.editions.mark` where it is not yet) passes nbgrader's metadata checks,
    and nbgrader's code cells are the student edition's."""
    pytest.importorskip("nbgrader")
    nb = editions.mark(nbformat.read(path, as_version=4))
    released = nbgrader_release(copy.deepcopy(nb))
    ours = editions.student_edition(nb, path.stem)
    for theirs, mine in zip(released.cells, ours.cells):
        if theirs.cell_type == "code":
            assert theirs.source == mine.source


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_both_editions_of_every_chapter_build(path, tmp_path):
    """What `make student` and `make instructor` do, chapter by chapter: a chapter with a Your-turn cell carries its
    markers and nbgrader metadata (this fails, naming the cell, until the chapters are marked)."""
    (instructor,) = editions.build("instructor", tmp_path / "instructor", [path])
    assert instructor.read_bytes() == path.read_bytes()
    (student,) = editions.build("student", tmp_path / "student", [path])
    marking = editions.validate(nbformat.read(path, as_version=4), path.stem)
    assert bool(marking.solutions) == ("01" <= path.stem[:2] <= "08")
    assert ("raise NotImplementedError()" in student.read_text()) == bool(marking.solutions)


def unmarked(nb):
    """``nb`` without its markers and nbgrader metadata, as the chapters were before the contract."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    for cell in nb.cells:
        cell.metadata.pop("nbgrader", None)
        cell.source = "\n".join(line for line in cell.source.splitlines() if "SOLUTION" not in line)
    return nb


def test_mark_adds_the_contracts_markers_and_metadata_and_is_idempotent():
    marked = editions.mark(unmarked(chapter()))
    assert [c.source for c in marked.cells] == [c.source for c in chapter().cells]
    assert [c.metadata for c in marked.cells] == [c.metadata for c in chapter().cells]
    again = editions.mark(marked)
    assert [(c.source, c.metadata) for c in again.cells] == [(c.source, c.metadata) for c in marked.cells]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_each_chapter_marked_gives_a_student_edition_whose_checks_are_not_implemented_yet(path):
    """The real chapters' Your-turn cells, marked by :func:`dclip.editions.mark` where they are not yet: in the
    student edition each defines a stub that its check reports as not implemented yet."""
    import dclip
    from dclip import exercises

    student = editions.student_edition(editions.mark(nbformat.read(path, as_version=4)), path.stem)
    turns = [i for i, c in enumerate(student.cells) if editions.is_your_turn(c)]
    for i in turns:
        namespace = {"torch": torch, "dclip": dclip}
        exec(student.cells[i].source, namespace)
        name = student.cells[i].metadata.nbgrader.grade_id
        check = getattr(exercises, re.search(r"(check_\w+)\(", student.cells[i + 1].source).group(1))
        assert str(check(namespace[name])).endswith(
            f"not implemented yet: write {name} in the cell above (the stub raises NotImplementedError)"
        )
        assert student.cells[i + 1].outputs == []
    assert bool(turns) == ("01" <= path.stem[:2] <= "08")
