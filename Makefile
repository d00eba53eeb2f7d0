# Factory: `make run` sets up and runs 14 simulated days; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup run test ui bench lint clean

# uv installs the pinned environment in seconds where pip takes a minute or more; if uv
# itself cannot be had, pip installs the same pins.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt uv \
		&& $(BIN)/uv pip install --quiet --python $(BIN)/python -c constraints.txt -e ".[dev,ui]" \
		|| $(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,ui]"
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/factory demo --days 14

# One worker per core (pytest-xdist); a test file stays on one worker, so its module fixtures run once.
test: setup
	$(BIN)/python -m pytest -n auto --dist loadfile

ui: setup
	$(BIN)/factory ui

bench: setup
	$(BIN)/python -m benchmarks

lint: setup
	$(BIN)/ruff check factory_dagster tests benchmarks
	$(BIN)/ruff format --check factory_dagster tests benchmarks

clean:
	rm -rf $(VENV) data dbt_project/target
