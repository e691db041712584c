# trapbatch: two commands for a newcomer.
#   make demo   set up, then run one task end to end on the bundled sample images (local pool, Azurite, devhost)
#   make test   set up, then run the whole test suite (CI runs exactly this through .ci/run)
# Everything installs from the project's own files: pip (requirements/), npm (package.json), apt (chromium).
# `make setup` installs what the app, devhost, the worker and the CLI need (the demo's); `make setup-test` adds the
# test suite's tools (pytest, the MegaDetector oracle, the Bicep checker's venv, Debian's Chromium for the browser test).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.trapbatch-installed
TEST_STAMP := $(VENV)/.trapbatch-test-installed
PYTEST_ARGS ?=
# Debian's Chromium drives the preview page's browser test (tests/browser); apt refreshes its lists only when needed.
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: setup setup-test demo test clean bench

setup: $(STAMP) node_modules/.bin/azurite $(VENV)/bin/trapbatch

setup-test: setup $(TEST_STAMP) $(CHROMIUM)

$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "Chromium is needed for the browser test: install it (Debian: apt-get install chromium)"; exit 1; }
	$(SUDO) apt-get install -y -q chromium >/dev/null || { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q chromium >/dev/null; }

# platform-test.txt: the Functions worker's own indexing code, which devhost runs over function_app.py at start.
$(STAMP): requirements/app.txt requirements/worker.txt requirements/cli.txt requirements/platform-test.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 11) else "Python 3.11+ is needed; set PYTHON=python3.11")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements/app.txt -r requirements/cli.txt
	$(PIP) install -q --no-deps --ignore-requires-python -r requirements/platform-test.txt
	$(PIP) install -q -r requirements/worker.txt
	touch $(STAMP)

$(TEST_STAMP): $(STAMP) requirements/dev.txt requirements/oracle.txt scripts/install_oracle_deps.sh requirements/infra-test.txt
	$(PIP) install -q -r requirements/dev.txt
	bash scripts/install_oracle_deps.sh $(VENV)
	test -x $(VENV)/infra/bin/python || $(PYTHON) -m venv $(VENV)/infra && $(VENV)/infra/bin/pip install -q -r requirements/infra-test.txt
	touch $(TEST_STAMP)

# The `trapbatch` command (cli/, pyproject's [project.scripts]): a launcher rather than `pip install -e .`, which would
# put this checkout's top-level packages (core, api, ...) on every interpreter path of the environment.
$(VENV)/bin/trapbatch: $(STAMP)
	printf '#!/bin/sh\n# trapbatch launcher written by make setup\nPYTHONPATH="%s$${PYTHONPATH:+:$$PYTHONPATH}" exec "%s" -m cli "$$@"\n' "$(CURDIR)" "$(CURDIR)/$(PY)" > $@
	chmod +x $@

node_modules/.bin/azurite: package.json
	@command -v npm >/dev/null || { echo "npm (Node 20+) is needed for the Azurite storage emulator: apt-get install nodejs npm"; exit 1; }
	npm install --no-audit --no-fund --loglevel=error
	touch $@

demo: setup
	$(PY) -m scripts.demo

# Two pytest workers (pytest-xdist), one test file each at a time: most integration tests wait on Azurite, devhost
# and worker processes, so two files at once fit CI's two cores (TEST_WORKERS=0 runs everything in one process).
# The 25 slowest tests are listed at the end, to keep CI's 30 minutes in view. Files run longest first
# (tests/file_order.py; --no-loadscope-reorder keeps that order, where xdist would put the files with most tests first).
TEST_WORKERS ?= 2
test: setup-test
	$(PY) -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder) \
		--durations=25 $(PYTEST_ARGS)

bench: setup-test
	$(PY) bench/worker_throughput.py --images 40 --arch yolov5n

clean:
	rm -rf demo-output .pytest_cache
