# The README's two commands: `make test` and `make demo`. Both set up .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install test test-unit demo clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --progress-bar off -e '.[ml,test]'
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest

test-unit: install
	$(PY) -m pytest tests/unit

demo: install
	$(VENV)/bin/csr demo

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis *.egg-info
