# The project's vocabulary. Every target installs what it needs first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= .leaderboard/demo
TORCH_VERSION ?= 2.13.0

.PHONY: install test test-fast lint format demo serve serve-demo serve-models bench readme-screenshot clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: on these machines it is a CPU wheel on local disk; a bare range would pull CUDA.
	$(PY) -m pip install --quiet 'torch==$(TORCH_VERSION)'
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# The whole suite: unit, integration (SQLite and PostgreSQL) and acceptance tests (with a real single-node Slurm).
test: install
	bash scripts/ensure-postgres.sh
	bash scripts/ensure-slurm.sh
	bash scripts/ensure-chromium.sh
	$(PY) -m pytest -n 2 --dist loadgroup

lint: install
	$(VENV)/bin/ruff check backend tests bench
	$(VENV)/bin/ruff format --check backend tests bench
	$(VENV)/bin/mypy backend bench

format: install
	$(VENV)/bin/ruff format backend tests bench
	$(VENV)/bin/ruff check --fix backend tests bench

# The main job on the embedded default (SQLite, local model store): build a tiny model, submit, vote, queue.
demo: install
	$(VENV)/bin/leaderboard demo --workdir $(DEMO_DIR)

# The HTTP API on the embedded default (http://127.0.0.1:8000/docs).
serve: install
	$(VENV)/bin/leaderboard serve

# The pages and the API over what `make demo` left (its database, models and results).
serve-demo: install
	LEADERBOARD_DATABASE_URL=sqlite:///$(abspath $(DEMO_DIR))/leaderboard.db \
	LEADERBOARD_MODEL_STORE=$(abspath $(DEMO_DIR))/models \
	LEADERBOARD_RESULTS=$(abspath $(DEMO_DIR))/results \
	LEADERBOARD_WORK_DIR=$(abspath $(DEMO_DIR))/work \
	LEADERBOARD_JUDGED=$(abspath $(DEMO_DIR))/pandalm_demo.yaml \
	LEADERBOARD_ARENA=$(abspath $(DEMO_DIR))/arena_demo.yaml \
	$(VENV)/bin/leaderboard serve --no-scheduler

# The OpenAI-compatible model endpoint over the demo's models (http://127.0.0.1:8001/v1).
serve-models: install
	LEADERBOARD_MODEL_STORE=$(abspath $(DEMO_DIR))/models $(VENV)/bin/leaderboard serve-models

# What the backend costs, measured (harness overhead, queue at scale, publishing, re-scoring, GPU when
# present): writes bench/results/<date>-<host>.json and prints a markdown summary. Under 15 minutes on 2 CPUs.
bench: install
	bash scripts/ensure-postgres.sh
	$(PY) -m bench.run

# The README's picture of the leaderboard page: the browser tests' own screenshot of it.
readme-screenshot: install
	bash scripts/ensure-chromium.sh
	$(PY) -m pytest -q -p no:randomly tests/acceptance/test_browser.py -k every_page
	mkdir -p docs
	cp artifacts/browser/leaderboard.png docs/leaderboard.png

clean:
	rm -rf $(VENV) .leaderboard .pytest_cache
