# The project's vocabulary. Every target installs what it needs first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= .leaderboard/demo
TORCH_VERSION ?= 2.13.0

.PHONY: install test test-fast lint format demo clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: on these machines it is a CPU wheel on local disk; a bare range would pull CUDA.
	$(PY) -m pip install --quiet 'torch==$(TORCH_VERSION)'
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# The whole suite: unit, integration (SQLite and PostgreSQL) and acceptance tests.
test: install
	bash scripts/ensure-postgres.sh
	$(PY) -m pytest -n 2 --dist loadgroup

lint: install
	$(VENV)/bin/ruff check backend tests
	$(VENV)/bin/ruff format --check backend tests
	$(VENV)/bin/mypy backend

format: install
	$(VENV)/bin/ruff format backend tests
	$(VENV)/bin/ruff check --fix backend tests

# The main job on the embedded default (SQLite, local model store): build a tiny model, submit, vote, queue.
demo: install
	$(VENV)/bin/leaderboard demo --workdir $(DEMO_DIR)

clean:
	rm -rf $(VENV) .leaderboard .pytest_cache
