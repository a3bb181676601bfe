# The two commands of the README: `make lab` (set up and open the course) and `make test` (set up and run every test).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: lab test unit notebooks browser chapters lint student instructor

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	$(PY) -m ipykernel install --user --name dclip --display-name "Python (dclip)" > /dev/null
	touch $@

lab: $(VENV)/.installed
	$(VENV)/bin/jupyter lab notebooks/

test: lint unit notebooks browser

# Two workers of one thread each: the machine has two cores, and two threads per worker oversubscribe them
# (the suite took 583 s so, 363 s with one thread each: docs/results.md, "The tiny world on a CPU").
unit: $(VENV)/.installed
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 -m "not browser" tests

# Every stored text output of every chapter is compared (strict nbval); notebooks/nbval_sanitize.cfg masks times,
# paths and devices. Two chapters at a time, one thread each (each chapter's cells stay in order on one worker).
notebooks: $(VENV)/.installed
	OMP_NUM_THREADS=1 TQDM_DISABLE=1 DCLIP_WORLD=$${DCLIP_WORLD:-tiny} $(PY) -m pytest -n 2 --dist loadscope \
		--nbval --nbval-current-env --nbval-sanitize-with notebooks/nbval_sanitize.cfg -p no:cacheprovider notebooks/

# A student's view: JupyterLab in headless Chromium (/usr/bin/chromium) runs a chapter and a slider is dragged.
browser: $(VENV)/.installed
	DCLIP_REQUIRE_BROWSER=1 $(PY) -m pytest -m browser tests/test_browser.py

# Re-execute and store the chapters (all, or CHAPTERS="notebooks/03_ddim_inversion.ipynb ...") in the tiny world.
chapters: $(VENV)/.installed
	$(PY) tools/run_chapters.py $(CHAPTERS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check dclip tests benchmarks tools
	$(VENV)/bin/ruff format --check dclip tests benchmarks tools

# The editions a lecturer hands out (dclip.editions): the student's (solutions replaced by stubs, exercise solutions
# removed) and the instructor's (the chapters as they are). `make test` builds both on every chapter in its unit tests.
student: $(VENV)/.installed
	$(PY) -m dclip.editions student build/student

instructor: $(VENV)/.installed
	$(PY) -m dclip.editions instructor build/instructor
