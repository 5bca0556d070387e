# The two commands of the README: `make demo` and `make test`. Both set the machine up first, each
# with what it needs (tools/setup.sh demo|test); the test setup includes the demo's.
VENV ?= .venv
DEMO_STAMP := $(VENV)/.setup-demo-stamp
TEST_STAMP := $(VENV)/.setup-test-stamp

.PHONY: setup demo test lint quick bench
setup: $(TEST_STAMP)

$(DEMO_STAMP): pyproject.toml tools/setup.sh tools/device-constraints.txt
	VENV=$(VENV) bash tools/setup.sh demo
	touch $(DEMO_STAMP)

$(TEST_STAMP): pyproject.toml tools/setup.sh tools/device-constraints.txt
	VENV=$(VENV) bash tools/setup.sh test
	touch $(TEST_STAMP) $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(VENV)/bin/sigkiosk demo

# Lint and type check first (seconds; zero findings is the rule), then the whole suite on every core
# (pytest-xdist; each test module stays on one worker, so its module fixtures run once; the modules
# with minutes-long fixtures go first: tests/conftest.py). At most 4 workers: a training test's
# subprocess takes about 1.7 GB.
test: lint
	$(VENV)/bin/python -m pytest -q -n auto --maxprocesses 4 --dist loadfile --no-loadscope-reorder

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# The unit tests alone: no broker, database, browser, subprocess, shared data or training.
quick: $(TEST_STAMP)
	$(VENV)/bin/python -m pytest -q -m "not integration"

bench: $(TEST_STAMP)
	$(VENV)/bin/sigkiosk bench
