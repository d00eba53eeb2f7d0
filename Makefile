# Factory: `make run` sets up and runs 14 simulated days; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup system-deps run test ui bench lint clean

# uv installs the pinned environment in seconds where pip takes a minute or more. The environment starts without pip
# (putting pip into it took 4 of the 10 s of a fresh setup) and the interpreter's own pip (22.3 or later:
# `--python`) puts uv into it. Where that cannot be done, pip goes into the environment after all and installs the
# same pins.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv --without-pip $(VENV)
	( $(PYTHON) -m pip --python $(BIN)/python install --quiet -c constraints.txt uv \
		&& $(BIN)/uv pip install --quiet --python $(BIN)/python -c constraints.txt -e ".[dev,ui]" ) \
	|| ( $(BIN)/python -m ensurepip --upgrade --default-pip >/dev/null \
		&& $(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,ui]" )
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/factory demo --days 14

# The IMAP tests run a real dovecot (Debian's dovecot-imapd), started by their fixture on its own port and config;
# the report test opens the report in Debian's headless chromium; the PostgreSQL warehouse tests start throwaway
# clusters of Debian's postgresql (tests/postgres_server.py; its server programs live in /usr/lib/postgresql/<ver>/bin);
# the production instance's test reaches Dagster's database through Debian's pgbouncer (tests/pgbouncer_server.py).
# Each is installed with apt only when missing (so this is instant afterwards); while apt runs, a policy-rc.d (unless
# the machine has one) keeps dovecot, postgresql and pgbouncer from starting system services on ports 143/993, 5432
# and 6432. Without root or apt it says what to install and fails: the tests never skip.
system-deps:
	@missing=; \
	command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ] || missing="$$missing dovecot-imapd"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || missing="$$missing pgbouncer"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
		echo "make test needs$$missing (dovecot with IMAP for the IMAP tests, chromium for the report test, postgresql for the PostgreSQL warehouse tests, pgbouncer for the production instance's test): as root," \
			"apt-get install$$missing (Debian/Ubuntu), or the same from your system's packages; then run make test again" >&2; \
		exit 1; \
	fi; \
	echo "installing$$missing for the tests (apt-get)"; \
	added=; if [ ! -e /usr/sbin/policy-rc.d ]; then \
		printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && added=1; \
	fi; \
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	status=$$?; if [ -n "$$added" ]; then rm -f /usr/sbin/policy-rc.d; fi; exit $$status

# One worker per core (pytest-xdist); a test file stays on one worker, so its module fixtures run once. The slowest
# files go first (tests/conftest.py, SLOW_MODULES_FIRST), so that none of them starts last.
# Bytecode is written even where PYTHONDONTWRITEBYTECODE is set (as on some CI images): the tests start many Python
# processes (xdist workers, dbt, Dagster's code server, daemon and run workers, the CLI), and without .pyc files each
# of them compiles Dagster, dbt and pandas from source again, about 5 s of CPU apiece.
test: setup system-deps
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m pytest -n auto --dist loadfile --no-loadscope-reorder

ui: setup
	$(BIN)/factory ui

bench: setup
	$(BIN)/python -m benchmarks

lint: setup
	$(BIN)/ruff check factory_dagster tests benchmarks
	$(BIN)/ruff format --check factory_dagster tests benchmarks

clean:
	rm -rf $(VENV) data dbt_project/target
