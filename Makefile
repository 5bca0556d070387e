# The two commands of the README: `make demo` and `make test`. Both set the machine up first.
VENV ?= .venv
STAMP := $(VENV)/.setup-stamp

.PHONY: setup demo test bench
setup: $(STAMP)

$(STAMP): pyproject.toml tools/setup.sh
	VENV=$(VENV) bash tools/setup.sh
	touch $(STAMP)

demo: setup
	$(VENV)/bin/sigkiosk demo

test: setup
	$(VENV)/bin/python -m pytest -q

bench: setup
	$(VENV)/bin/sigkiosk bench
