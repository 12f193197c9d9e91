# Two commands do everything on a fresh machine:
#   make book   build the Jupyter Book (runs the study's missing results on PROFILE first)
#   make test   run the test suite
# Both create .venv from nothing. torch is installed first, pinned to the CPU wheel, so that no
# CUDA build is pulled on a CPU machine; GPU users: see README ("GPU machines").

PYTHON  ?= python3
VENV    ?= .venv
PROFILE ?= default
PY      := $(VENV)/bin/python
TORCH   ?= torch==2.13.0
STAMP   := $(VENV)/.installed

.PHONY: test book clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[book,dev]"
	touch $@

test: $(STAMP)
	$(PY) -m pytest -q tests

book: $(STAMP)
	$(PY) -m hhrnet study --profile $(PROFILE) --missing-only
	# --all: every page re-executes, so the book never shows another profile's or older results
	HHRNET_PROFILE=$(PROFILE) $(VENV)/bin/jupyter-book build . --all --builder html -W -n --keep-going

clean:
	rm -rf _build
