# The two set-up commands: `make demo` and `make test`. Both create .venv, install what the
# project needs (system parts too, idempotently) and need no prompt.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: demo test test-fast test-faults lint format install system clean bench control-plane helm cluster user-env oidc-provider kueue

$(STAMP): setup.cfg pyproject.toml tools/pyproject.toml jhub_ext/etc/ipython_config.json
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || \
		{ rm -rf $(VENV); scripts/install-system.sh venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]' -e ./tools
	# the kernels of local mode's servers load the magics (setup.cfg's data_files, which an
	# editable install leaves out)
	install -D -m 644 jhub_ext/etc/ipython_config.json $(VENV)/etc/ipython/ipython_config.json
	touch $(STAMP)

install: $(STAMP)
	scripts/install-system.sh proxy confine

system: install
	scripts/install-system.sh proxy chart-proxy confine chromium postgres cc

# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and etcd, built from their Go
# modules into ~/.cache/jhub_ext/ (minutes the first time, nothing after)
control-plane:
	scripts/build-control-plane.sh >/dev/null

# Ory Hydra, the OpenID Connect provider the login tests use (tests/oidc.py), built from its Go
# module into ~/.cache/jhub_ext/ (minutes the first time, nothing after; needs a C compiler)
oidc-provider:
	scripts/build-hydra.sh >/dev/null

# Kueue v0.17.0 and its CRDs, built from its Go module into ~/.cache/jhub_ext/ (minutes the first time,
# nothing after), for the tests of clusters that run it
kueue:
	scripts/build-kueue.sh >/dev/null

# the Helm client, built from its Go module into ~/.cache/jhub_ext/ (minutes the first time, nothing after)
helm:
	scripts/build-helm.sh >/dev/null

# as root: the Python environment users' own accounts run servers and jobs in (minutes the first time)
user-env: install
	$(BIN)/python -m jhub_ext.local.userenv >/dev/null

# the local control plane with its node agent, in the foreground (Ctrl-C stops it all)
cluster: install control-plane
	$(BIN)/python -m devcluster --state state/cluster

demo: install user-env
	$(BIN)/jupyterhub -f hub_config/jupyterhub_config.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/hadolint images/*/Dockerfile
	$(BIN)/mypy jhub_ext tools/devcluster

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: system lint control-plane helm oidc-provider user-env kueue
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# only the pure tests, in seconds: nothing to install but the Python environment
test-fast: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

# only the fault-injection tests, at full size (make test runs them too, in a short form)
test-faults: system control-plane user-env
	JHUB_EXT_FAULTS=full $(BIN)/python -m pytest -m faults $(PYTEST_ARGS)

bench: install
	$(BIN)/python benchmarks/run.py $(BENCH)

# the documentation, built offline with Sphinx into build/docs/; any warning (a broken link between
# pages, a heading anchor that does not exist) fails it
.PHONY: docs docs-reference
docs: $(STAMP)
	$(BIN)/python -m sphinx -E -W --keep-going -b html -q docs build/docs

# rewrite docs/reference/{catalog,rest-api,settings}.md from the catalog's schema, the OpenAPI file
# and the settings' help (tests/unit/test_docs.py fails until they are current)
docs-reference: $(STAMP)
	$(BIN)/python docs/generate.py

clean:
	rm -rf $(VENV) state node_modules
