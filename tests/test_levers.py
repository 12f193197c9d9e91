"""Levers (``levers:`` in rows.yaml, run by ``hhrnet.study.levers``): a lever is its stated changes and
nothing else, the CPU recipe is the recipe lever, and the committed lever results were produced by the
lever definitions as they stand."""

from __future__ import annotations

import json

import pytest

from conftest import REPO
from hhrnet.config import from_dict, preset, to_dict
from hhrnet.study import Study

EXPERIMENTS = REPO / "experiments"
COMMITTED = sorted((EXPERIMENTS / "results" / "levers").glob("*.json"))
PROFILE_LEVERS = ["cpu_input_192", "cpu_long"]  # levers on the cpu profile's own data, as it stands


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


@pytest.mark.parametrize("name", PROFILE_LEVERS)
def test_a_profile_lever_is_the_cpu_headline_with_its_changes_only(name):
    study = Study.load(EXPERIMENTS)
    headline = _flat(to_dict(study.training_config("w32_512", "cpu")))
    lever = _flat(to_dict(study.lever_config(name)))
    changed = {key for key in headline if headline[key] != lever[key]}
    declared = {**study.lever(name).base, **study.lever(name).changes}
    assert changed and changed <= set(declared)  # nothing but its own keys (some may equal the profile's now)
    assert {key: lever[key] for key in declared} == declared  # each with its declared value
    assert lever["train.data_root"] == study.data_spec("cpu")["data_root"]  # the profile's own scenes


@pytest.mark.parametrize("name", PROFILE_LEVERS)
def test_committed_profile_lever_results_match_the_current_definitions(name):
    study = Study.load(EXPERIMENTS)
    committed = json.loads((EXPERIMENTS / "results" / "levers" / f"{name}.json").read_text())
    # read with today's schema, as any config file is: a field added since (at its default) is no change,
    # keys that now follow another (model.num_joints) are checked and dropped
    written = to_dict(from_dict(committed["config"]))
    assert _machine_free(written) == _machine_free(to_dict(study.lever_config(name)))
    cfg = study.lever_config(name)
    per_epoch = study.data_spec("cpu")["synthetic"]["train"] // cfg.train.batch_size
    assert committed["curve"][-1]["iter"] == cfg.train.epochs * per_epoch  # the run finished


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.stem)
def test_every_committed_lever_result_is_a_lever_of_rows_yaml_with_its_changes(path):
    study = Study.load(EXPERIMENTS)
    committed = json.loads(path.read_text())
    assert committed["lever"] == path.stem and committed["changes"] == dict(study.lever(path.stem).changes)
    assert committed["curve"] and {"iter", "AP"} <= set(committed["curve"][0])


def test_the_cpu_recipe_is_the_recipe_lever_over_the_published_values():
    """rows.yaml writes the recipe's levers once: the cpu profile carries the `recipe` lever's changes, and
    the recipe search's base is the published (preset) value of each of them."""
    study = Study.load(EXPERIMENTS)
    recipe, profile = study.lever("recipe"), study.profile_spec("cpu").changes
    assert {key: profile[key] for key in recipe.changes} == dict(recipe.changes)
    published = _flat(to_dict(preset("w32_512")))
    for key in recipe.changes:
        expected = published[key][:1] if key.startswith("loss.") else published[key]  # one value: every output
        assert recipe.base[key] == expected, key
    search = study.lever_config("recipe")
    assert _flat(to_dict(search))["model.stem_channels"] == 32 and search.train.epochs == recipe.base["train.epochs"]
    assert study.lever_data_spec("recipe")["synthetic"]["train"] == 2000  # the earlier, smaller set
