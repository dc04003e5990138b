# Two set-up commands on a fresh machine: `make train` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: install install-test data train test test-fast

# The library alone (what `make train` needs): no PyTorch, no test tools. Versions from
# constraints.txt, the set the suite passed with (pyproject.toml keeps ranges for users).
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e .
	touch $@

# + the test extra (pytest, nbclient, PyTorch CPU for the parity tests).
$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test]"
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# The offline copy of Fashion-MNIST (Debian's package); elsewhere its original files are downloaded.
data:
	@test -d $(FASHION_MNIST) || { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; } \
	  || echo "note: could not install dataset-fashion-mnist; effnet-jax will try to download fashion_mnist"

train: install data
	$(BIN)/effnet-jax train --config fashion_mnist --workdir runs/fashion_mnist

# Everything CI runs (the README's test command).
test: install-test data
	$(BIN)/python -m pytest -n 2 --durations=25 tests

# The unit tier, under a minute: run it while editing.
test-fast: install-test
	$(BIN)/python -m pytest -n 2 -m "unit and not slow" tests
