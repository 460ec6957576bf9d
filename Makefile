PY ?= .venv/bin/python
VENV := .venv

.PHONY: install check lint fmt types contracts test test-unit bench serve clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

check: install lint types contracts

lint:
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .

fmt:
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

types:
	$(PY) -m mypy core storage ingest rules scheduler api simulator pmkeeper tests bench

contracts:
	$(VENV)/bin/lint-imports

# Runs the whole suite; exit code 5 (no tests collected) is a failure, as is any other.
test: install
	$(PY) -m pytest

test-unit: install
	$(PY) -m pytest tests/unit

bench: install
	$(PY) -m bench.ingest_throughput

.PHONY: bench-ingest-rules
bench-ingest-rules: install
	$(PY) -m bench.ingest_rules

.PHONY: bench-rules
# Single core, no services: about 2 minutes. `--help` lists the knobs (--profile for hot spots).
bench-rules: install
	$(PY) -m bench.rules_evaluator

.PHONY: bench-api
# Needs PostgreSQL on 127.0.0.1:5432 (user postgres), mosquitto and influxd: about 8 minutes.
# `--help` lists the knobs (--rate, --concurrency, --ingest-rate, --profile for hot spots).
bench-api: install
	$(PY) -m bench.api_load

serve: install
	$(VENV)/bin/pmkeeper serve

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
