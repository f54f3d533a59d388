# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs the project (torch 2.14.1 from the configured index) first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
RUNNER := $(VENV)/bin/runner
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(RUNNER) launch --matrix demo
	$(RUNNER) report --table demo_accuracy

test: $(STAMP)
	$(PY) -m pytest -q --durations=25

# every in-process test and the CLI checks that train nothing: no `runner launch/tune/probe`, no SLURM,
# no PostgreSQL (tests/conftest.py marks the tests that need them)
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not e2e and not slurm and not postgres"

bench: $(STAMP)
	$(PY) bench/cli_speed.py
	$(PY) bench/arch_speed.py
	$(PY) bench/data_speed.py
	$(PY) bench/train_speed.py
	$(PY) bench/scheduling.py
	$(PY) bench/report_speed.py
	$(PY) bench/scale.py

clean:
	rm -rf results
