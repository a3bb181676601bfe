# The two commands of the README: `make lab` (set up and open the course) and `make test` (set up and run every test).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: lab test unit notebooks lint

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	$(PY) -m ipykernel install --user --name dclip --display-name "Python (dclip)" > /dev/null
	touch $@

lab: $(VENV)/.installed
	$(VENV)/bin/jupyter lab notebooks/

test: lint unit notebooks

unit: $(VENV)/.installed
	$(PY) -m pytest tests

notebooks: $(VENV)/.installed
	TQDM_DISABLE=1 DCLIP_WORLD=$${DCLIP_WORLD:-tiny} $(PY) -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider notebooks/

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check dclip tests benchmarks
	$(VENV)/bin/ruff format --check dclip tests benchmarks
