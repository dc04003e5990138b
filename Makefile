# Two set-up commands on a fresh machine: `make train` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: install data train test

$(BIN)/effnet-jax: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(BIN)/effnet-jax

# The offline copy of Fashion-MNIST (Debian's package); TFDS downloads it where online.
data:
	@test -d $(FASHION_MNIST) || { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; } \
	  || echo "note: could not install dataset-fashion-mnist; TFDS will try to download fashion_mnist"

train: install data
	$(BIN)/effnet-jax train --config experiments/configs/fashion_mnist.py --workdir runs/fashion_mnist

test: install data
	$(BIN)/python -m pytest -n 2 tests
