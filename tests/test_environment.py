"""environment.yml stays in sync with pyproject.toml (the single source of dependencies)."""

from __future__ import annotations

import re
import tomllib

import yaml

from conftest import REPO


def test_environment_yml_installs_the_project_extras():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pip_block = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert len(pip_block) == 1
    match = re.fullmatch(r"-e \.\[([a-z,]+)\]", pip_block[0])
    assert match, pip_block
    assert set(match.group(1).split(",")) == set(project["optional-dependencies"])
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    major, minor = map(int, python.split("=")[1].split("."))
    low = tuple(map(int, project["requires-python"].removeprefix(">=").split(".")))
    assert (major, minor) >= low


def test_makefile_pins_the_cpu_torch_wheel_first():
    makefile = (REPO / "Makefile").read_text()
    assert makefile.index('install -q $(TORCH)') < makefile.index('-e ".[book,dev]"')


def test_makefile_builds_the_crowdpose_evaluator_before_the_project():
    makefile = (REPO / "Makefile").read_text()
    source_build = makefile.index("--no-build-isolation --no-binary xtcocotools")
    assert makefile.index("install -q numpy cython setuptools") < source_build < makefile.index('-e ".[book,dev]"')
    assert "TORCH   ?= torch==2.13.0" in makefile
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "xtcocotools>=1.14" in dependencies  # pip keeps the source build that satisfies it
