# Two entry points for a fresh machine:
#   make demo   set up .venv and run a short Navigation2D MAML-TRPO experiment
#   make test   set up .venv and run the test suite (what CI runs)
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_ITERS ?= 20

.PHONY: setup demo test lint clean

$(BIN)/metarl: setup.cfg pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: an unpinned torch pulls a multi-GB CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(BIN)/metarl

setup: $(BIN)/metarl

demo: setup
	$(BIN)/metarl train experiments/configs/navigation2d.yaml --set iterations=$(DEMO_ITERS)
	$(BIN)/metarl evaluate $$(ls -td runs/Navigation2D__* | head -n 1) --tasks 40 --steps 3

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check metarl envs tests benchmarks experiments

clean:
	rm -rf $(VENV) *.egg-info
