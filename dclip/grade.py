"""Grade submitted notebooks with the checks of :mod:`dclip.exercises`.

    python -m dclip.grade submissions/*/*.ipynb --out grades [--timeout 60]

Of each notebook only the Your-turn cells (nbgrader solution cells, or code cells starting with ``# Your turn``) and
the notebook's top-level imports are run, never its other (heavy) cells; each function ``my_xxx`` goes through its
check (``check_...(my_xxx)`` in the cell after it), all of a student's in one subprocess (``--jobs`` students at
a time), each check within ``--timeout`` seconds. The student is the notebook's folder when the notebook is named
after a chapter (``alice/01_ddpm.ipynb``), else its file name (``alice.ipynb``). Written into ``--out``:

- ``grades.csv``: one row a student, one column a check (``chapter/check_name``), each cell ``pass``,
  ``fail: <the check's message>`` or ``missing`` (no such function in the student's notebooks);
- ``feedback/<student>.md``: each check's full verdict.

The students' code runs with the grader's rights: grade in a container or an account of its own.
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import os
import queue
import re
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nbformat

CHAPTER = re.compile(r"\d\d_\w+")
#: The time a worker may take to start (import torch and dclip) before its first check.
START_TIMEOUT = 120.0


@dataclass
class Job:
    """One function to check: where it comes from (``chapter``), the notebook's import statements, the solution
    cells before it (``context``: a later exercise may use what an earlier one defined) and its Your-turn cell."""

    chapter: str
    function: str
    check: str
    imports: list[str]
    context: list[str]
    cell: str

    @property
    def column(self) -> str:
        return f"{self.chapter}/{self.check}"


def _imports(cells: list[str]) -> list[str]:
    """The top-level ``import`` statements of the code cells (magics and shell lines left out), once each."""
    found = []
    for source in cells:
        code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
        try:
            tree = ast.parse(code)
        except SyntaxError:
            continue
        found += [
            ast.get_source_segment(code, node) for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)
        ]
    return list(dict.fromkeys(found))


def is_solution_cell(cell: nbformat.NotebookNode) -> bool:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return cell.cell_type == "code" and (bool(meta.get("solution")) or cell.source.startswith("# Your turn"))


def chapter_of(path: Path, nb: nbformat.NotebookNode) -> str:
    """The chapter a notebook is: its file name when that is a chapter's (``01_ddpm``), else the chapter its title
    cell's Colab badge opens, else its file name."""
    badge = re.search(r"notebooks/(\d\d_\w+)\.ipynb", nb.cells[0].source) if nb.cells else None
    return path.stem if CHAPTER.fullmatch(path.stem) or badge is None else badge.group(1)


def checks_of(path: Path) -> list[Job]:
    """The checks of one submitted notebook: each solution cell's ``my_xxx`` with the check its next cell calls."""
    nb = nbformat.read(path, as_version=4)
    chapter = chapter_of(path, nb)
    imports = _imports([c.source for c in nb.cells if c.cell_type == "code"])
    found, context = [], []
    for i, cell in enumerate(nb.cells):
        if not is_solution_cell(cell):
            continue
        context.append(cell.source)
        name = re.search(r"^def (my_\w+)\(", cell.source, flags=re.M)
        after = nb.cells[i + 1].source if i + 1 < len(nb.cells) else ""
        check = re.search(rf"\b(check_\w+)\(\s*{name.group(1)}\b", after) if name else None
        if check is not None:
            found.append(Job(chapter, name.group(1), check.group(1), imports, context[:-1], cell.source))
    return found


def student_of(path: Path) -> str:
    return path.parent.name if CHAPTER.fullmatch(path.stem) else path.stem


def _worker() -> None:
    """Run the jobs given as JSON on stdin; report ``{"start": k}`` and ``{"done": k, ...}`` lines on the real
    stdout (the students' prints go to stderr)."""
    report = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    import dclip.exercises

    def say(**message: object) -> None:
        report.write(json.dumps(message) + "\n")
        report.flush()

    def run_imports(statements: list[str], namespace: dict) -> None:
        for statement in statements:
            try:
                exec(statement, namespace)
            except Exception:  # an import the grader's machine lacks (e.g. google.colab): the cells may not need it
                pass

    batch = json.loads(sys.stdin.read())
    run_imports([s for job in batch for s in job["imports"]], {})  # loaded once, before the checks' clocks start
    for k, job in enumerate(batch):
        say(start=k)
        namespace: dict = {"__name__": "__student__"}
        run_imports(job["imports"], namespace)
        for earlier in job["context"]:
            try:
                exec(earlier, namespace)
            except Exception:  # that cell's own check reports it
                pass
        try:
            exec(job["cell"], namespace)
        except Exception as e:
            say(done=k, passed=False, message=f"the Your-turn cell raised {type(e).__name__}: {e}")
            continue
        check = getattr(dclip.exercises, job["check"], None)
        if check is None or job["function"] not in namespace:
            missing = job["check"] if check is None else job["function"]
            say(done=k, passed=False, message=f"{missing} is not defined")
            continue
        verdict = check(namespace[job["function"]])
        say(done=k, passed=verdict.passed, message=str(verdict))


def _run(batch: list[Job], timeout: float) -> list[tuple[bool, str]]:
    """Each job's (passed, message), run in worker subprocesses; a job past ``timeout`` seconds is killed with its
    worker, and a new worker goes on with the next."""
    results: list[tuple[bool, str]] = []
    while len(results) < len(batch):
        rest = batch[len(results) :]
        proc = subprocess.Popen(
            [sys.executable, "-m", "dclip.grade", "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        lines: queue.Queue[str | None] = queue.Queue()

        def read(stream=proc.stdout, lines=lines) -> None:
            for line in stream:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()
        proc.stdin.write(json.dumps([job.__dict__ for job in rest]))
        proc.stdin.close()
        wait, started = START_TIMEOUT, False
        while len(results) < len(batch):
            try:
                line = lines.get(timeout=wait)
            except queue.Empty:
                line = "timeout"
            if line is None or line == "timeout":
                if line == "timeout" and started:
                    results.append((False, f"timed out after {timeout:g} s (an endless loop?)"))
                elif line is None:
                    results.append((False, f"the check's process ended (exit code {proc.wait()}) before its verdict"))
                else:
                    raise RuntimeError(f"the grading worker did not start within {START_TIMEOUT:g} s")
                break
            message = json.loads(line)
            if "start" in message:
                wait, started = timeout, True
            elif "done" in message:
                results.append((message["passed"], message["message"]))
                started = False
        proc.kill()
        proc.wait()
    return results


def grade(submissions: list[Path], out: Path, timeout: float = 60.0, jobs: int = 2) -> dict[str, dict[str, str]]:
    """Grade the notebooks, ``jobs`` students at a time; write ``grades.csv`` and ``feedback/<student>.md`` into
    ``out``; returns ``{student: {column: cell}}`` as written."""
    by_student: dict[str, list[Job]] = {}
    for path in submissions:
        by_student.setdefault(student_of(path), []).extend(checks_of(path))
    columns = sorted({job.column for batch in by_student.values() for job in batch})
    table: dict[str, dict[str, str]] = {}
    (out / "feedback").mkdir(parents=True, exist_ok=True)
    students = sorted(by_student)
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        results = dict(zip(students, pool.map(lambda student: _run(by_student[student], timeout), students)))
    for student in students:
        batch = by_student[student]
        verdicts = dict(zip([job.column for job in batch], results[student]))
        table[student] = {
            column: "missing"
            if column not in verdicts
            else "pass"
            if verdicts[column][0]
            else f"fail: {verdicts[column][1]}"
            for column in columns
        }
        lines = [f"# Feedback for {student}", ""]
        for column in columns:
            passed, message = verdicts.get(column, (False, "missing: no such function in your notebooks"))
            lines.append(f"- **{column}**: {'pass' if passed else 'fail'}\n\n  {message}\n")
        (out / "feedback" / f"{student}.md").write_text("\n".join(lines))
    with open(out / "grades.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", *columns])
        for student, row in table.items():
            writer.writerow([student, *(row[c] for c in columns)])
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dclip.grade", description=__doc__.splitlines()[0])
    parser.add_argument("submissions", nargs="*", type=Path, help="the students' notebooks")
    parser.add_argument("--out", type=Path, help="the folder for grades.csv and feedback/")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds each check may take (default 60)")
    parser.add_argument("--jobs", type=int, default=2, help="students graded at a time (default 2)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker()
        return 0
    if not args.submissions or args.out is None:
        parser.error("give the notebooks to grade and --out DIR")
    table = grade(args.submissions, args.out, args.timeout, args.jobs)
    passed = sum(cell == "pass" for row in table.values() for cell in row.values())
    total = sum(len(row) for row in table.values())
    print(f"graded {len(table)} students: {passed} of {total} checks pass; wrote {args.out / 'grades.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
