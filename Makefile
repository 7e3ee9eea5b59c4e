# The README's two commands, `make demo` and `make test`, work on a fresh machine:
# the first use creates .venv and installs the project (building ext/) into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXT_SOURCES := $(wildcard ext/*.pyx ext/*.pxd)

.PHONY: demo lint test test-fast bench ext clean

$(STAMP): pyproject.toml setup.py $(EXT_SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

ext: $(STAMP)
	$(BIN)/python setup.py --quiet build_ext --inplace

demo: $(STAMP)
	$(BIN)/tpmon demo

# The linter first: a finding fails the test target (and CI) before a test runs.
lint: $(STAMP)
	$(BIN)/ruff check .

# Locally the suites marked slow (real process fleets, schemathesis, the optimizer learning) are
# skipped, which keeps the run near 5 minutes on 2 cores; CI (CI=true) runs every suite.
test: lint
	$(BIN)/python -m pytest -q -rs --durations=15 $(if $(filter true,$(CI)),,-m 'not slow')

test-fast: lint
	$(BIN)/python -m pytest -q -m 'not slow'

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info ext/*.c ext/*.so
