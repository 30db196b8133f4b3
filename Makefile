# The README's two commands: `make test` and `make demo`. Both set up .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install proto test test-unit lint demo clean compose-tool kube-tool browser-tool constraints

# Every dependency is pinned in constraints.txt, so a fresh install gets the versions the
# README's figures were measured with.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --progress-bar off -c constraints.txt -e '.[ml,services,test]'
	touch $(STAMP)

# After a deliberate upgrade: pin what the environment now holds.
constraints: install
	{ sed -n '1,3p' constraints.txt; $(PY) -m pip freeze --exclude-editable | grep -v '^csr=='; } \
	  > constraints.txt.new && mv constraints.txt.new constraints.txt

# Python stubs are generated from the .proto files, never edited by hand.
PROTOS := $(wildcard proto/csr_api/v1/*.proto)
STUBS := $(patsubst proto/%.proto,%_pb2.py,$(PROTOS))

$(STUBS): %_pb2.py: proto/%.proto $(STAMP)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. $<

proto: $(STUBS)

install: $(STAMP) $(STUBS)

# CI validates docker-compose.yml without a Docker engine: Debian's docker-compose v1 parses it.
compose-tool:
	@command -v docker-compose >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
	  && (apt-get update -qq && apt-get install -y -qq --no-install-recommends docker-compose \
	      >/dev/null) || echo "docker-compose not installed: the compose check will fail"; }

# The run report's tests load it in a real browser: Debian's chromium, headless.
browser-tool:
	@command -v chromium >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
	  && (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium \
	      >/dev/null) || echo "chromium not installed: the report's browser tests will fail"; }

# CI renders deploy/kubernetes offline with kustomize 5, standalone or inside kubectl >= 1.27
# (this project's machines have kubectl; Debian's kubectl 1.20 is too old for the overlay).
# The Kubernetes schemas come with the test extra's kubernetes-validate.
kube-tool:
	@command -v kustomize >/dev/null || command -v kubectl >/dev/null \
	  || echo "neither kustomize nor kubectl found: the Kubernetes check will fail (install kustomize 5)"

# Lint and format check of the whole tree; type check of the core (strict) and the runtime.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: install compose-tool kube-tool browser-tool lint
	CSR_REQUIRE_COMPOSE=1 CSR_REQUIRE_KUBERNETES=1 CSR_REQUIRE_BROWSER=1 $(PY) -m pytest

test-unit: install
	$(PY) -m pytest tests/unit

# The main job: build (or reuse) the toy world's models, run 3 CSR iterations through
# `csr up`, evaluate the base model and every iteration, print the table and the plot's path;
# then write the run's HTML report (pairs, Figure 5, evaluation) and print its path.
demo: install
	$(VENV)/bin/csr toyworld run --out runs/toyworld
	$(VENV)/bin/csr pairs report runs/toyworld/csr/seed-0/run

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis *.egg-info csr_api/v1
