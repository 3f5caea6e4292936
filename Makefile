# Two entry points for a fresh machine:
#   make demo   set up .venv and run a short Navigation2D MAML-TRPO experiment, then evaluate it
#   make test   set up .venv (with the test dependencies) and run the test suite (what CI runs)
#   make docs   regenerate the reference pages and serve the documentation site on http://127.0.0.1:8000
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_ITERS ?= 20

.PHONY: setup setup-test demo test lint docs clean

$(BIN)/metarl: setup.cfg pyproject.toml
	# headless rendering (metarl video) needs EGL; install Debian's packages where they are missing
	@ldconfig -p 2>/dev/null | grep -q 'libEGL_mesa.so' || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
		&& (apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri >/dev/null 2>&1 \
		    || (apt-get update -qq && apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri >/dev/null)) \
		|| echo "note: metarl video needs EGL: apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri"; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: an unpinned torch pulls a multi-GB CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e .
	# a venv made when the suite used mujoco 4 keeps mujoco 4's split-off packages, whose plugins break 3.3
	@if $(BIN)/pip show --quiet mujoco-core 2>/dev/null; then \
		$(BIN)/pip uninstall --quiet -y mujoco-studio mujoco-core && \
		$(BIN)/pip install --quiet --force-reinstall --no-deps mujoco==3.3.0; fi
	touch $(BIN)/metarl

$(VENV)/.test-deps: $(BIN)/metarl
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(VENV)/.test-deps

setup: $(BIN)/metarl

setup-test: $(VENV)/.test-deps

demo: setup
	$(BIN)/metarl train experiments/configs/navigation2d.yaml --set iterations=$(DEMO_ITERS)
	$(BIN)/metarl evaluate "$$(ls -td runs/Navigation2D__maml_trpo__* | head -n 1)" --tasks 40 --steps 3

test: setup-test
	$(BIN)/python -m pytest -q

lint: setup-test
	$(BIN)/ruff check metarl envs tests benchmarks experiments docs

docs: setup-test
	$(BIN)/python docs/gen_reference.py
	$(BIN)/mkdocs serve -a 127.0.0.1:8000

clean:
	rm -rf $(VENV) *.egg-info
