"""experiments/levers.py: a lever is its stated changes and nothing else, and the committed lever results
were produced by the lever definitions as they stand."""

from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import REPO
from hhrnet.config import from_dict, to_dict
from hhrnet.study import Study

EXPERIMENTS = REPO / "experiments"


def _levers():
    spec = importlib.util.spec_from_file_location("levers", EXPERIMENTS / "levers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _machine_free(config: dict) -> dict:
    """A configuration without the one machine-specific field (where the data set is cached)."""
    flat = _flat(config)
    flat.pop("train.data_root")
    return flat


@pytest.mark.parametrize("name", ["cpu_input_192", "cpu_long"])
def test_a_profile_lever_is_the_cpu_headline_with_its_changes_only(name):
    levers, study = _levers(), Study.load(EXPERIMENTS)
    headline = _flat(to_dict(study.training_config("w32_512", "cpu")))
    lever = _flat(to_dict(levers.lever_config(study, name)))
    changed = {key for key in headline if headline[key] != lever[key]}
    assert changed == set(levers.PROFILE_LEVERS[name])
    assert lever["train.data_root"] == study.data_spec("cpu")["data_root"]  # the profile's own scenes


@pytest.mark.parametrize("name", ["cpu_input_192", "cpu_long"])
def test_committed_profile_lever_results_match_the_current_definitions(name):
    levers, study = _levers(), Study.load(EXPERIMENTS)
    committed = json.loads((EXPERIMENTS / "results" / "levers" / f"{name}.json").read_text())
    assert committed["changes"] == levers.ALL_LEVERS[name]
    # read with today's schema, as any config file is: a field added since (at its default) is no change,
    # keys that now follow another (model.num_joints) are checked and dropped
    written = to_dict(from_dict(committed["config"]))
    assert _machine_free(written) == _machine_free(to_dict(levers.lever_config(study, name)))
    cfg = levers.lever_config(study, name)
    per_epoch = study.data_spec("cpu")["synthetic"]["train"] // cfg.train.batch_size
    assert committed["curve"][-1]["iter"] == cfg.train.epochs * per_epoch  # the run finished
