# Two commands for a fresh machine: `make run` and `make test`.
# Each creates its own virtualenv and installs what it needs (Python and npm packages).

PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
CONFIG ?= crossbar-like.yaml

.PHONY: run test install npm-deps bench clean

$(BIN)/.installed: setup.cfg setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# compat mode puts the checkout itself on sys.path, so `twistd` finds twisted/plugins/.
	$(BIN)/pip install --quiet -e '.[test,dev]' --config-settings editable_mode=compat
	touch $@

install: $(BIN)/.installed

node_modules/.installed: package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

npm-deps: node_modules/.installed

run: install npm-deps
	$(BIN)/wampchat dev --config $(CONFIG)

test: install npm-deps
	$(BIN)/python -m pytest -p no:cacheprovider

# Crossbar.io, the peer of the benchmark, in a venv of its own: never a dependency of wampchat.
# numpy<2: the bjdata wheel crossbar pulls in is built against NumPy 1.x. py-spy: bench.run --profile.
CROSSBAR_VENV = bench/.crossbar-venv

$(CROSSBAR_VENV)/.installed:
	$(PYTHON) -m venv $(CROSSBAR_VENV)
	$(CROSSBAR_VENV)/bin/pip install --quiet --upgrade pip
	$(CROSSBAR_VENV)/bin/pip install --quiet crossbar==26.10.1 'numpy<2' pyjwt psycopg2-binary txpostgres py-spy
	touch $@

bench: install npm-deps $(CROSSBAR_VENV)/.installed
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.auth
	$(BIN)/python -m bench.logins
	$(BIN)/python -m bench.store_path

clean:
	rm -rf $(VENV) node_modules .pytest_cache
