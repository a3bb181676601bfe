"""The student and instructor editions of the chapters, built from one source (the chapters in ``notebooks/``).

    python -m dclip.editions student build/student        # what a student opens: the solutions taken out
    python -m dclip.editions instructor build/instructor  # the chapters as they are, solutions and markers kept
    python -m dclip.editions validate                     # each chapter's solution and check cells, or what is wrong
    python -m dclip.editions mark                         # add the markers and metadata below where missing

The marking contract (nbgrader's format, so that ``nbgrader generate_assignment`` also runs on the chapters):

- A **"Your turn" cell** is a code cell whose source starts with ``# Your turn``; it defines ``def my_xxx(...)``.
  The lines the student writes are between a line ``### BEGIN SOLUTION`` and a line ``### END SOLUTION``, indented
  like the body. Its metadata: ``"nbgrader": {"solution": true, "grade": false, "locked": false, "task": false,
  "grade_id": "my_xxx", "schema_version": 3}``.
- Its **check cell** is the next cell: it calls ``dclip.exercises.check_...(my_xxx)`` and prints the verdict. Its
  metadata: ``"nbgrader": {"solution": false, "grade": false, "locked": true, "task": false,
  "grade_id": "check_my_xxx", "schema_version": 3}``.
- **Exercise solutions in markdown**: each ``<details><summary>Solution ...</summary> ... </details>`` block is
  between a line ``<!-- BEGIN SOLUTION -->`` and a line ``<!-- END SOLUTION -->``. nbgrader refuses a solution
  region in a cell not marked as a solution cell, and a markdown solution cell must also be a graded cell with
  points (a "manually graded answer"; nbgrader's metadata schema v3), so such a markdown cell's metadata is
  ``"nbgrader": {"solution": true, "grade": true, "points": 0, "locked": false, "task": false,
  "grade_id": "<a name unique in the chapter, e.g. exercises>", "schema_version": 3}``. nbgrader replaces a
  markdown region by "YOUR ANSWER HERE"; the student edition built here removes it.
- A delimiter is alone on its line (nbgrader starts or ends a region at any line that contains ``BEGIN SOLUTION``
  or ``END SOLUTION``, so no other line may contain those words); regions pair up and do not nest; a cell marked
  as a solution cell holds at least one region (nbgrader would replace a whole cell without one).

The student edition replaces each code region by nbgrader's stub (``# YOUR CODE HERE`` and
``raise NotImplementedError()``, at the region's indentation), removes the markdown regions and clears the outputs
of the Your-turn and check cells; the other outputs stay, so a reader sees the figures. Both editions refuse a
chapter that breaks the contract (:class:`MarkingError`, naming the cell and what to do).
"""

from __future__ import annotations

import argparse
import copy
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat import NotebookNode

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
YOUR_TURN = "# Your turn"
DELIMITERS = {
    "code": ("### BEGIN SOLUTION", "### END SOLUTION"),
    "markdown": ("<!-- BEGIN SOLUTION -->", "<!-- END SOLUTION -->"),
}
STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
EDITIONS = ("student", "instructor")


class MarkingError(ValueError):
    """A chapter that breaks the marking contract of :mod:`dclip.editions`."""


@dataclass
class Marking:
    """What a chapter marks: the grade ids of its Your-turn cells (``solutions``) and check cells (``checks``), and
    the number of solution regions in its markdown (``exercise_solutions``)."""

    chapter: str
    solutions: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    exercise_solutions: int = 0

    def __str__(self) -> str:
        return (
            f"{self.chapter}: solution cells {self.solutions or 'none'}; check cells {self.checks or 'none'}; "
            f"{self.exercise_solutions} exercise solution(s) in markdown"
        )


def _where(chapter: str, index: int, cell: NotebookNode) -> str:
    first = (cell.source.splitlines() or [""])[0][:60]
    return f"{chapter}, cell {index} ({cell.cell_type}, {first!r})"


def solution_regions(cell: NotebookNode, where: str = "this cell") -> list[tuple[int, int]]:
    """The solution regions of a code or markdown cell as (begin, end) line indices of their delimiters; a
    :class:`MarkingError` for a delimiter not alone on its line, a region that is not closed, or nested regions."""
    if cell.cell_type not in DELIMITERS:
        return []
    begin, end = DELIMITERS[cell.cell_type]
    regions, start = [], None
    for i, line in enumerate(cell.source.splitlines()):
        if "BEGIN SOLUTION" not in line and "END SOLUTION" not in line:
            continue
        text = line.strip()
        if text not in (begin, end):
            raise MarkingError(
                f"{where}, line {i + 1}: {line.strip()!r} is not a delimiter of a {cell.cell_type} cell; write "
                f"{begin!r} and {end!r} alone on their lines (nbgrader takes any line with BEGIN/END SOLUTION as one)"
            )
        if text == begin:
            if start is not None:
                raise MarkingError(f"{where}, line {i + 1}: {begin!r} inside a region opened at line {start + 1}")
            start = i
        else:
            if start is None:
                raise MarkingError(f"{where}, line {i + 1}: {end!r} without a {begin!r} before it")
            regions.append((start, i))
            start = None
    if start is not None:
        raise MarkingError(f"{where}, line {start + 1}: {begin!r} is never closed by {end!r}")
    return regions


def _nbgrader(cell: NotebookNode) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def _expect(meta: dict, wanted: dict, where: str, what: str) -> None:
    wrong = {k: meta.get(k) for k, v in wanted.items() if meta.get(k) != v}
    if wrong:
        raise MarkingError(
            f'{where}: {what} needs the metadata "nbgrader": {wanted} (with "schema_version": 3); it has {wrong}'
        )


def is_your_turn(cell: NotebookNode) -> bool:
    return cell.cell_type == "code" and cell.source.startswith(YOUR_TURN)


def validate(nb: NotebookNode, chapter: str = "the chapter") -> Marking:
    """The chapter's :class:`Marking`, or a :class:`MarkingError` naming the first cell that breaks the contract
    (a Your-turn cell without markers, a check cell without its metadata, a markdown region in a cell not marked as
    a graded solution cell, unpaired delimiters, a solution cell without a region, a repeated grade id)."""
    marking, ids = Marking(chapter), set()
    for i, cell in enumerate(nb.cells):
        where = _where(chapter, i, cell)
        regions, meta = solution_regions(cell, where), _nbgrader(cell)
        if meta and meta.get("schema_version") != 3:
            raise MarkingError(f'{where}: nbgrader metadata needs "schema_version": 3')
        grade_id = meta.get("grade_id")
        if grade_id is not None:
            if grade_id in ids:
                raise MarkingError(
                    f"{where}: grade_id {grade_id!r} is used twice in the chapter; nbgrader needs it unique"
                )
            ids.add(grade_id)
        if meta.get("solution") and not regions:
            raise MarkingError(
                f"{where}: a solution cell without a BEGIN/END SOLUTION region (nbgrader would replace the whole cell)"
            )
        if is_your_turn(cell):
            name = re.search(r"^def (my_\w+)\(", cell.source, flags=re.M)
            if name is None:
                raise MarkingError(f"{where}: a Your-turn cell defines the student's function, def my_xxx(...)")
            if not regions:
                raise MarkingError(
                    f"{where}: a Your-turn cell without solution markers: put the lines the student writes between "
                    "'### BEGIN SOLUTION' and '### END SOLUTION'"
                )
            solution = {"solution": True, "grade": False, "locked": False, "grade_id": name.group(1)}
            _expect(meta, solution, where, "a Your-turn cell")
            after = nb.cells[i + 1] if i + 1 < len(nb.cells) else None
            check_where = _where(chapter, i + 1, after) if after is not None else f"{chapter}, after cell {i}"
            if (
                after is None
                or after.cell_type != "code"
                or not re.search(rf"check_\w+\({name.group(1)}\b", after.source)
            ):
                raise MarkingError(f"{check_where}: the cell after a Your-turn cell calls check_...({name.group(1)})")
            check = {"solution": False, "grade": False, "locked": True, "grade_id": f"check_{name.group(1)}"}
            _expect(_nbgrader(after), check, check_where, "a check cell")
            marking.solutions.append(name.group(1))
            marking.checks.append(f"check_{name.group(1)}")
        elif regions and cell.cell_type == "markdown":
            graded = {"solution": True, "grade": True, "locked": False}
            _expect(meta, graded, where, "a markdown cell with solution regions (a manually graded answer)")
            if "points" not in meta:
                raise MarkingError(f'{where}: a graded markdown cell needs "points" (0 is fine)')
            marking.exercise_solutions += len(regions)
        elif regions:
            raise MarkingError(f"{where}: a code cell with a solution region is a Your-turn cell (# Your turn ...)")
    return marking


def _stubbed(cell: NotebookNode, regions: list[tuple[int, int]]) -> str:
    """The cell's source with each region replaced: by the stub at the region's indentation (code), by nothing
    (markdown)."""
    lines, out, previous = cell.source.splitlines(), [], 0
    for begin, end in regions:
        out += lines[previous:begin]
        if cell.cell_type == "code":
            indent = re.match(r"\s*", lines[begin]).group(0)
            out += [indent + line for line in STUB]
        previous = end + 1
    return "\n".join(out + lines[previous:])


def student_edition(nb: NotebookNode, chapter: str = "the chapter") -> NotebookNode:
    """The student edition of a chapter (validated first): solution regions replaced by the stub (code) or removed
    (markdown), outputs of the Your-turn and check cells cleared."""
    validate(nb, chapter)
    nb = copy.deepcopy(nb)
    clear = False
    for i, cell in enumerate(nb.cells):
        regions = solution_regions(cell, _where(chapter, i, cell))
        if regions:
            cell.source = _stubbed(cell, regions)
        if cell.cell_type == "code" and (clear or is_your_turn(cell)):
            cell.outputs, cell.execution_count = [], None
        clear = is_your_turn(cell)
    return nb


def _body(lines: list[str], start: int) -> tuple[int, int] | None:
    """The lines of the function defined at ``lines[start]`` that the student writes: from the first line after
    its docstring to its last line (both inclusive), or None when it has no such lines."""
    indent = len(lines[start]) - len(lines[start].lstrip())
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    first = start + 1
    quote = lines[first].strip()[:3] if first < end else ""
    if quote in ('"""', "'''") or quote[:1] in ('"', "'"):
        mark = quote if quote in ('"""', "'''") else quote[:1]
        while first < end and not (lines[first].strip().endswith(mark) and len(lines[first].strip()) >= 2 * len(mark)):
            first += 1
        first += 1
    return (first, end - 1) if first < end else None


def _mark_function(source: str) -> str:
    """``source`` with the body of its ``def my_xxx`` (after the docstring) between the code delimiters."""
    lines = source.splitlines()
    start = next((j for j, line in enumerate(lines) if re.match(r"def my_\w+\(", line)), None)
    body = _body(lines, start) if start is not None else None
    if body is None:
        return source
    indent = re.match(r"\s*", lines[body[0]]).group(0)
    begin, end = DELIMITERS["code"]
    return "\n".join(
        [*lines[: body[0]], indent + begin, *lines[body[0] : body[1] + 1], indent + end, *lines[body[1] + 1 :]]
    )


def _mark_details(source: str) -> str:
    """``source`` with each ``<details><summary>Solution`` block (to its ``</details>`` line) between the markdown
    delimiters, at the block's indentation."""
    begin, end = DELIMITERS["markdown"]
    out, indent = [], None
    for line in source.splitlines():
        if indent is None and re.match(r"\s*<details>\s*<summary>\s*Solution", line):
            indent = re.match(r"\s*", line).group(0)
            out.append(indent + begin)
        out.append(line)
        if indent is not None and "</details>" in line:
            out.append(indent + end)
            indent = None
    return "\n".join(out)


def _metadata(
    grade_id: str, *, solution: bool = False, grade: bool = False, locked: bool = False, **more: object
) -> dict:
    return {
        "grade": grade,
        "grade_id": grade_id,
        "locked": locked,
        "schema_version": 3,
        "solution": solution,
        "task": False,
        **more,
    }


def mark(nb: NotebookNode) -> NotebookNode:
    """A copy of a chapter marked as the contract says, where it is not yet: each Your-turn cell's function body
    (after its docstring) between ``### BEGIN SOLUTION`` and ``### END SOLUTION``, its metadata and its check
    cell's; each markdown ``<details><summary>Solution`` block (from that line to its ``</details>`` line) between
    ``<!-- BEGIN SOLUTION -->`` and ``<!-- END SOLUTION -->``, its cell marked as a graded solution cell (0 points,
    grade id ``exercises``, ``exercises_2``, ...). Regions already there are kept."""
    nb = copy.deepcopy(nb)
    graded = 0
    for i, cell in enumerate(nb.cells):
        marked = bool(solution_regions(cell, f"cell {i}"))
        if is_your_turn(cell):
            cell.source = cell.source if marked else _mark_function(cell.source)
            name = re.search(r"^def (my_\w+)\(", cell.source, flags=re.M)
            if name is not None and solution_regions(cell):
                cell.metadata["nbgrader"] = _metadata(name.group(1), solution=True)
                if i + 1 < len(nb.cells) and nb.cells[i + 1].cell_type == "code":
                    nb.cells[i + 1].metadata["nbgrader"] = _metadata(f"check_{name.group(1)}", locked=True)
        elif cell.cell_type == "markdown":
            cell.source = cell.source if marked else _mark_details(cell.source)
            if solution_regions(cell) and "nbgrader" not in cell.metadata:
                graded += 1
                grade_id = "exercises" if graded == 1 else f"exercises_{graded}"
                cell.metadata["nbgrader"] = _metadata(grade_id, solution=True, grade=True, points=0)
    return nb


def chapters(paths: list[Path] | None = None) -> list[Path]:
    return sorted(paths) if paths else sorted(NOTEBOOKS.glob("*.ipynb"))


def build(edition: str, out: Path, paths: list[Path] | None = None) -> list[Path]:
    """Write ``edition`` ("student" or "instructor") of the chapters (all of ``notebooks/`` by default) into
    ``out``; returns the files written. The instructor edition is each chapter's file unchanged."""
    if edition not in EDITIONS:
        raise ValueError(f"unknown edition {edition!r}; use one of {EDITIONS}")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in chapters(paths):
        nb = nbformat.read(path, as_version=4)
        target = out / path.name
        if edition == "instructor":
            validate(nb, path.stem)
            shutil.copyfile(path, target)
        else:
            nbformat.write(student_edition(nb, path.stem), target)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dclip.editions", description=__doc__.splitlines()[0])
    parser.add_argument("edition", choices=[*EDITIONS, "validate", "mark"])
    parser.add_argument("out", nargs="?", type=Path, help="the folder to write into (student, instructor)")
    parser.add_argument("--notebooks", nargs="+", type=Path, help="the chapters (default: all of notebooks/)")
    args = parser.parse_args(argv)
    try:
        if args.edition == "mark":
            for path in chapters(args.notebooks):
                nbformat.write(mark(nbformat.read(path, as_version=4)), path)
                print(validate(nbformat.read(path, as_version=4), path.stem))
            return 0
        if args.edition == "validate":
            for path in chapters(args.notebooks):
                print(validate(nbformat.read(path, as_version=4), path.stem))
            return 0
        if args.out is None:
            parser.error(f"{args.edition} needs the folder to write into, e.g. build/{args.edition}")
        written = build(args.edition, args.out, args.notebooks)
    except MarkingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote the {args.edition} edition of {len(written)} chapters to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
