# Two commands matter: `make run` and `make test` (ruff, mypy, pytest). Both create the virtualenv on first use;
# `make test` also installs the npm packages some tests drive the server with (tests/js, from its lockfile),
# and the local Cashu mint the payment tests run, in a virtualenv of its own (tests/cashu_mint).
# Settings are environment variables; `make run PORT=8123 DATA_DIR=/some/dir` passes them through.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
JS := tests/js
MINT := tests/cashu_mint

.PHONY: run test lint format migrate clean bench bench-abuse

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

$(JS)/node_modules/.package-lock.json: $(JS)/package-lock.json
	npm ci --no-audit --no-fund --prefix $(JS)
	touch $@

# The mint's own pins would clash with ours: its virtualenv takes exactly the listed packages.
$(MINT)/.venv/.installed: $(MINT)/requirements.txt
	rm -rf $(MINT)/.venv
	$(PYTHON) -m venv $(MINT)/.venv
	$(MINT)/.venv/bin/pip install --quiet --no-deps -r $(MINT)/requirements.txt
	touch $@

run: $(VENV)/.installed
	$(BIN)/satellite serve

migrate: $(VENV)/.installed
	$(BIN)/satellite migrate

# The suite runs in TEST_WORKERS processes (each with a database of its own), a test file per process at
# a time; TEST_WORKERS=0 runs it in this one.
TEST_WORKERS ?= 2

test: $(VENV)/.installed-dev $(JS)/node_modules/.package-lock.json $(MINT)/.venv/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/run.py

# 200 slow or abusive clients while normal clients upload and download, against a run without them.
bench-abuse: $(VENV)/.installed-dev
	$(BIN)/python bench/abuse.py

format: $(VENV)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis $(JS)/node_modules $(MINT)/.venv
