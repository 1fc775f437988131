# Developer entry points. The project lives in .venv (see scripts/setup.sh).
#   make setup      create/update .venv (pinned packages, sam2, msg/srv build, editable install)
#   make demo       setup, then the main job: sam2s_node on the real CholecSeg8k clip (or
#                   ARGS="my_video.mp4 --box x0,y0,x1,y1"), output bag + overlay video + J&F
#                   (needs a checkpoint in models/, or ARGS=--random-weights)
#   make test       run the test suite (pytest.ini: markers, per-test timeout)
#   make lint       ruff format --check + ruff check (pyproject.toml); `make format` rewrites
#   make clean      remove build outputs (keeps .venv)
#   make distclean  clean + remove .venv
# Extra pytest arguments: make test PYTEST_ARGS='-k interfaces -x'
#                         make test PYTEST_ARGS='-m "not slow"'   (skip the colcon build check)

SHELL := /bin/bash
VENV := .venv
PYTHON := $(VENV)/bin/python
PYTEST_ARGS ?=
ARGS ?=

.PHONY: setup demo test lint format clean distclean

setup:
	bash scripts/setup.sh

demo: setup
	$(VENV)/bin/sam2s demo $(ARGS)

test:
	@test -x $(PYTHON) || { echo "make test: $(PYTHON) not found; run 'make setup' first." >&2; exit 1; }
	$(PYTHON) -m pytest test -q -ra $(PYTEST_ARGS)

lint:
	@test -x $(VENV)/bin/ruff || { echo "make lint: $(VENV)/bin/ruff not found; run 'make setup' first." >&2; exit 1; }
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format:
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf build install log .pytest_cache *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
