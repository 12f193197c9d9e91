# Two commands do everything on a fresh machine:
#   make book   build the Jupyter Book from the committed study (PROFILE, default cpu); trains nothing
#   make test   run the test suite
# and one re-runs the study:
#   make study  run what is missing or stale in PROFILE (smoke: seconds; default: about half an hour;
#               cpu: the committed study, hours; paper: GPUs and COCO) with WORKERS processes
#               sharing the cores (two one-thread processes beat one two-thread one on this CPU)
# Both create .venv from nothing. torch is installed first, pinned to the CPU wheel, so that no
# CUDA build is pulled on a CPU machine; GPU users: see README ("GPU machines").

PYTHON  ?= python3
VENV    ?= .venv
PROFILE ?= cpu
WORKERS ?= $(if $(filter paper,$(PROFILE)),1,2)
PY      := $(VENV)/bin/python
TORCH   ?= torch==2.13.0
STAMP   := $(VENV)/.installed

.PHONY: test book study clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q $(TORCH)
	# xtcocotools (the CrowdPose evaluator, a dependency) from source before the project, which then
	# keeps it: its wheels are built against numpy 1.x and fail to import on numpy 2; its setup.py
	# imports numpy, hence no build isolation
	$(PY) -m pip install -q numpy cython setuptools
	$(PY) -m pip install -q --no-build-isolation --no-binary xtcocotools "xtcocotools>=1.14"
	$(PY) -m pip install -q -e ".[book,dev]"
	touch $@

test: $(STAMP)
	$(PY) -m pytest -q tests

study: $(STAMP)
	$(PY) -m hhrnet study --profile $(PROFILE) --workers $(WORKERS)

book: $(STAMP)
	# --all: every page re-executes, so the book never shows another profile's or older results
	HHRNET_PROFILE=$(PROFILE) $(VENV)/bin/jupyter-book build . --all --builder html -W -n --keep-going

clean:
	rm -rf _build
