"""rows.yaml as a typed spec (schema extensions included), and study results that are never lost or mixed."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import time

import pytest
import yaml

from conftest import REPO
from hhrnet.study import SpecError, Study, StudyLocked, gather, load_spec
from hhrnet.study.plan import Run
from hhrnet.study.runner import run_lock
from hhrnet.study.spec import CocoData, EvaluationSpec, SyntheticData

EXPERIMENTS = REPO / "experiments"


def _write(tmp_path, change) -> Study:
    spec = yaml.safe_load((EXPERIMENTS / "rows.yaml").read_text())
    change(spec)
    (tmp_path / "rows.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True))
    for nb in ("train.ipynb", "evaluate.ipynb"):
        shutil.copy(EXPERIMENTS / nb, tmp_path / nb)
    return Study.load(tmp_path)


def test_the_committed_rows_yaml_is_typed():
    spec = load_spec(EXPERIMENTS / "rows.yaml")
    assert spec.trainings["hrnet_baseline"].changes["model.num_deconvs"] == 0
    assert spec.evaluations["w32_512_ms"].test == {"test.scales": [2.0, 1.0, 0.5]}
    assert isinstance(spec.profiles["cpu"].data, SyntheticData) and spec.profiles["cpu"].seeds == (0, 1, 2)
    assert isinstance(spec.profiles["paper"].data, CocoData)
    assert [str(e.op) for e in spec.families["deconv_modules"].expect] == [">", "≥"]


def test_an_evaluation_of_published_weights_needs_no_training(tmp_path):
    """``checkpoint:`` instead of ``training:``, restricted to one profile with ``profiles:``."""
    (tmp_path / "weights.pth").write_bytes(b"")

    def change(spec):
        spec["evaluations"]["mmpose_w32"] = {"checkpoint": "weights.pth", "profiles": ["paper"],
                                             "test": {"test.scales": [2.0, 1.0, 0.5]}}
        spec["trainings"]["w32_768"]["profiles"] = ["paper", "cpu"]

    study = _write(tmp_path, change)
    ev = study.definition.evaluations["mmpose_w32"]
    assert ev == EvaluationSpec("mmpose_w32", checkpoint="weights.pth", profiles=("paper",),
                                test={"test.scales": [2.0, 1.0, 0.5]})
    paper = {r.name: r for r in study.runs("paper")}
    run = paper["eval/mmpose_w32/seed0"]
    assert run.needs == () and run.parameters["checkpoint"] == str(tmp_path / "weights.pth")
    assert run.parameters["published"] is True
    cfg = study.evaluation_config("mmpose_w32", "paper")
    assert (cfg.model.width, cfg.input_size, cfg.test.scales) == (32, 512, (2.0, 1.0, 0.5))
    assert (cfg.train.data_root, cfg.train.val_split) == ("data/coco", "val2017")
    smoke = {r.name for r in study.runs("smoke")}
    assert "eval/mmpose_w32/seed0" not in smoke and "train/w32_768/seed0" not in smoke
    assert "eval/w32_768/seed0" not in smoke and "train/w32_768/seed0" in {r.name for r in study.runs("cpu")}


def test_a_profile_can_narrow_the_trainings_it_runs(tmp_path):
    """``trainings:`` in a profile keeps those trainings and the evaluations of them; other profiles keep all."""
    study = _write(tmp_path, lambda s: s["profiles"]["smoke"].update(trainings=["hrnet_baseline"]))
    assert list(study.trainings("smoke")) == ["hrnet_baseline"]
    assert {r.name for r in study.runs("smoke")} == {"train/hrnet_baseline/seed0", "eval/hrnet_baseline/seed0"}
    assert "train/w32_512/seed0" in {r.name for r in study.runs("cpu")}
    committed = Study.load(EXPERIMENTS)  # the default profile: the headline and its HRNet baseline
    assert set(committed.trainings("default")) == {"w32_512", "hrnet_baseline"}
    assert set(committed.evaluations("default")) >= {"w32_512_ss", "w32_512_ms", "hrnet_baseline"}


@pytest.mark.parametrize("change, message", [
    (lambda s: s["evaluations"]["w32_512_ss"].update(checkpoint="x.pth"), r"evaluations.w32_512_ss: give exactly one"),
    (lambda s: s["evaluations"]["w32_512_ss"].update(profiles="paper"), r"evaluations.w32_512_ss.profiles: expected a list"),
    (lambda s: s["trainings"]["w32_512"].update(preset="w64_512"), r"trainings.w32_512.preset: expected a preset"),
    (lambda s: s["profiles"]["cpu"].update(seeds=[]), r"profiles.cpu.seeds: expected at least one seed"),
    (lambda s: s["profiles"]["cpu"].update(headline=["w32_512"]), r"profiles.cpu: unknown key 'headline'"),
    (lambda s: s["profiles"]["default"].update(trainings=["w32_999"]), r"profiles.default.trainings: unknown training 'w32_999'"),
    (lambda s: s["profiles"]["default"].update(trainings="w32_512"), r"profiles.default.trainings: expected a list"),
    (lambda s: s["profiles"]["cpu"]["input_sizes"].update({640: 160}), r"profiles.cpu.input_sizes: sizes must be positive multiples of 64"),
    (lambda s: s["profiles"]["cpu"]["input_sizes"].pop(768), r"profiles.cpu.input_sizes: no entry for 768, the input size of training 'w32_768'"),
    (lambda s: s["evaluations"]["w32_512_ss"].update(published={"mmpose": "nope"}), r"evaluations.w32_512_ss.published: no row 'nope' in published.mmpose"),
    (lambda s: s["profiles"]["cpu"]["data"].update(hdf5={}), r"profiles.cpu.data: expected \{synthetic"),
    (lambda s: s["profiles"]["cpu"]["data"]["synthetic"].update(train="many"), r"profiles.cpu.data.synthetic.train: expected an integer"),
    (lambda s: s["evaluations"]["w32_512_ms"].update(test={"test.scales": [2.0, 0.5]}), r"evaluations.w32_512_ms.test: .*must contain 1.0"),
    (lambda s: s.pop("families"), r"top-level key 'families' must be a non-empty mapping"),
    (lambda s: s["published"]["mmpose"]["rows"].append({"evaluation": "nope"}), r"published.mmpose: row names unknown evaluation 'nope'"),
    (lambda s: s["published"]["official_crowdpose"]["rows"][0].update(evaluation="crowdpose_w32_512_ss"),
     r"published.official_crowdpose: a row gives exactly one of 'evaluation'"),
    (lambda s: s["trainings"]["crowdpose_w32_512"]["data"]["synthetic"].update(keypoints="mpii"),
     r"trainings.crowdpose_w32_512.data.synthetic.keypoints: expected a keypoint set"),
    (lambda s: s["trainings"]["crowdpose_w32_512"]["data"]["synthetic"].pop("keypoints"),
     r"trainings.crowdpose_w32_512: its keypoint set is 'crowdpose' but profile '\w+' generates 'coco' data"),
    (lambda s: s["trainings"]["crowdpose_w32_512"]["data"].pop("crowdpose"),
     r"trainings.crowdpose_w32_512: its keypoint set is 'crowdpose' but profile 'paper' reads COCO"),
    (lambda s: s["trainings"]["crowdpose_w32_512"]["data"].update(hdf5={}), r"trainings.crowdpose_w32_512.data: unknown key 'hdf5'"),
    (lambda s: s["trainings"]["crowdpose_w32_512"].update(profile_changes={"paper": {}, "gpu": {}}),
     r"trainings.crowdpose_w32_512.profile_changes: unknown profile 'gpu'"),
    (lambda s: s["trainings"]["crowdpose_w32_512"].update(profile_changes={"paper": {"train.nope": 1}}),
     r"trainings.crowdpose_w32_512.profile_changes.paper: "),
    (lambda s: s["profiles"]["paper"].update(backbones={32: "hrnet_w32_imagenet"}),
     r"profiles.paper.backbones: no backbone for width 48, the width of training 'w48_512'"),
    (lambda s: s["profiles"]["paper"].update(backbones={"w32": "hrnet_w32_imagenet"}),
     r"profiles.paper.backbones: expected a mapping of preset widths to backbones"),
    (lambda s: s["profiles"]["cpu"]["backbones"].update({32: "pretrained/elsewhere.pth"}),
     r"profiles.cpu.backbones.32: pretrained/elsewhere.pth is no lever's trunk"),
    (lambda s: s["levers"]["trunk_w16"].update(pretrain="pretrained/x.pth"),
     r"levers.trunk_w16: pretrain \(a limb-segmentation backbone\) and trunk \(a pose network\) exclude each other"),
    (lambda s: s["levers"]["he"].update(training="w64"), r"levers.he.training: unknown training 'w64'"),
    (lambda s: s["levers"]["he"].update(profile="gpu"), r"levers.he.profile: unknown profile 'gpu'"),
    (lambda s: s["levers"]["he"].update(changes={"train.nope": 1}), r"levers.he: unknown config key 'train.nope'"),
    (lambda s: s["levers"]["he"].pop("changes"), r"levers.he: missing key 'changes'"),
    (lambda s: s["families"]["crowds"].update(expect=["crowdpose_w32_512_ss.AP_tiny > crowdpose_w32_512_ss"]),
     r"families.crowds.expect: .*unknown metric 'AP_tiny'"),
    (lambda s: s["families"]["ae_loss"].update(reading="exp is fine"),
     r"families.ae_loss: unknown key 'reading' \(allowed: title, evaluations, expect, compare_published\)"),
    (lambda s: s["evaluations"]["w32_512_ss"].update(diagnostics="yes"),
     r"evaluations.w32_512_ss.diagnostics: expected true or false, got 'yes'"),
])
def test_rows_yaml_problems_name_file_entry_and_key(tmp_path, change, message):
    with pytest.raises(SpecError, match=r"rows.yaml: " + message):
        _write(tmp_path, change)


def test_a_yaml_syntax_error_names_line_and_column(tmp_path):
    (tmp_path / "rows.yaml").write_text("trainings:\n  w32_512: {preset: w32_512\nevaluations: [\n")
    with pytest.raises(SpecError, match=r"rows.yaml:3:\d+: YAML syntax error"):
        Study.load(tmp_path)


def test_a_key_given_twice_names_line_and_column_and_merge_overrides_stay_allowed(tmp_path):
    """PyYAML keeps the second of two equal keys silently; the study refuses it. ``<<: *anchor`` followed
    by one of the anchor's keys is an override (the committed profiles use it), not a duplicate."""
    from hhrnet.study.spec import read_yaml

    path = tmp_path / "rows.yaml"
    path.write_text("base: &base {a: 1, b: 2}\nx: {<<: *base, b: 3}\n")
    assert read_yaml(path) == {"base": {"a": 1, "b": 2}, "x": {"a": 1, "b": 3}}
    path.write_text("profiles:\n  smoke:\n    width: 0.125\n    seeds: [0]\n    width: 0.5\n")
    with pytest.raises(SpecError, match=r"rows.yaml:5:5: YAML syntax error: key 'width' appears twice"):
        read_yaml(path)


def _stamped(path, ap, stamp="abc"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"AP": ap, "stamp": stamp}))


def test_gather_publishes_only_stamped_readable_results_and_names_the_rest(tmp_path):
    study = _write(tmp_path, lambda s: None)
    results = study.results_dir("cpu") / "eval"
    _stamped(results / "w32_512_ss" / "seed0" / "metrics.json", 0.5)
    _stamped(results / "w32_512_ss" / "seed1" / "metrics.json", 0.7)
    (results / "w32_512_ss" / "seed2").mkdir()
    (results / "w32_512_ss" / "seed2" / "metrics.json").write_text('{"AP": 0.9')  # torn
    _stamped(results / "w32_640_ss" / "seed0" / "metrics.json", 0.9, stamp="")  # unstamped: a failed run
    logged = []
    gather(study, "cpu", log=logged.append)
    summary = json.loads((study.results_dir("cpu") / "summary.json").read_text())
    rows = {r["evaluation"]: r for r in summary["rows"]}
    assert set(rows) == {"w32_512_ss"} and rows["w32_512_ss"]["seeds"] == 2
    assert rows["w32_512_ss"]["AP"] == pytest.approx(0.6)
    skipped = {s["file"]: s["reason"] for s in summary["skipped"]}
    assert skipped.keys() == {"results/cpu/eval/w32_512_ss/seed2/metrics.json", "results/cpu/eval/w32_640_ss/seed0/metrics.json"}
    assert "unreadable" in skipped["results/cpu/eval/w32_512_ss/seed2/metrics.json"]
    assert "not stamped" in skipped["results/cpu/eval/w32_640_ss/seed0/metrics.json"]
    assert len(logged) == 2 and all("gather: skipped" in line for line in logged)


def test_the_published_checkpoints_are_paper_evaluations_without_training():
    study = Study.load(EXPERIMENTS)
    runs = {r.name: r for r in study.runs("paper")}
    run = runs["eval/published_w48_512_ms/seed0"]
    assert run.needs == () and run.parameters["checkpoint"] == "w48_512" and run.parameters["published"] is True
    cfg = study.evaluation_config("published_w48_512_ms", "paper")
    assert (cfg.model.width, cfg.input_size, cfg.test.scales) == (48, 512, (2.0, 1.0, 0.5))
    assert study.definition.evaluations["published_w48_512_ms"].published == {"mmpose": "w48_512_ms"}
    assert not any("published" in r.name for r in study.runs("cpu"))


def test_committed_cpu_results_are_read():
    """The committed cpu study gathers (it may be partial: the study runs seed by seed): every row is an
    evaluation of the profile with at most the profile's seeds, the headline is there, and every family
    gets a verdict (or says it is not measured)."""
    from hhrnet.study import summary_rows

    study = Study.load(EXPERIMENTS)
    rows = summary_rows(study, "cpu")
    assert "w32_512_ss" in rows and set(rows) <= set(study.evaluations("cpu"))
    assert all(1 <= row["seeds"] <= len(study.profile_spec("cpu").seeds) for row in rows.values())
    families = json.loads((study.results_dir("cpu") / "summary.json").read_text())["families"]
    assert set(families) == set(study.definition.families) and all(f["verdict"] for f in families.values())


def _hold(root, seconds, ready):
    study = Study.load(root)
    with run_lock(study, "smoke", Run("train/w32_512/seed0", "train", {})):
        ready.set()
        time.sleep(seconds)


def test_a_run_held_by_another_process_is_named_skipped_and_done_later(tmp_path, monkeypatch):
    """Two study processes share a profile: a held run raises ``StudyLocked`` naming its holder; the
    driver runs the next free run meanwhile, keeps an evaluation until its training is finished, and
    comes back to the held run once it is free."""
    from hhrnet.study import runner

    study = _write(tmp_path, lambda s: None)
    held = Run("train/w32_512/seed0", "train", {})
    free = Run("train/w32_640/seed0", "train", {})
    evaluation = Run("eval/w32_512_ss/seed0", "evaluate", {}, needs=(held.name,))
    ready = multiprocessing.get_context("fork").Event()
    holder = multiprocessing.get_context("fork").Process(target=_hold, args=(tmp_path, 1.5, ready))
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(StudyLocked, match=rf"train/w32_512/seed0 is being run by pid {holder.pid} on ") as err:
            with run_lock(study, "smoke", held):
                pass
        assert err.value.holder.startswith(f"pid {holder.pid} on ")
        with pytest.raises(StudyLocked):
            runner.run_pending(study, "smoke", [held], force=False, wait=False, log=lambda *_: None)
        executed, messages = [], []
        monkeypatch.setattr(runner, "run_status", lambda *_: "missing")
        monkeypatch.setattr(runner, "execute", lambda study, profile, run: executed.append(run.name))
        runner.run_pending(study, "smoke", [held, evaluation, free], force=False, wait=True, log=messages.append,
                           poll=0.1)
        assert executed == [free.name, held.name, evaluation.name]
        assert f"{held.name}: held by pid {holder.pid}" in messages[0]
    finally:
        holder.join(30)


def _planted_results(gt, noise: float, seed: int) -> list[dict]:
    """COCO results: every annotated person's keypoints jittered by ``noise`` pixels, score 1."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for ann in gt.dataset["annotations"]:
        if ann.get("num_keypoints", 0) == 0 or ann.get("iscrowd"):
            continue
        k = np.asarray(ann["keypoints"], float).reshape(-1, 3)
        k[:, :2] += rng.normal(0, noise, (len(k), 2))
        out.append({"image_id": ann["image_id"], "category_id": 1, "keypoints": k.ravel().tolist(), "score": 1.0})
    return out


def test_gather_decides_each_claim_with_a_paired_interval(tmp_path):
    """Match tables of every seed give each family comparison a 95% interval and an outcome."""
    from conftest import COCO_MINI
    from hhrnet.evaluation import MATCHES, load_ground_truth, match_table

    study = _write(tmp_path, lambda s: None)
    gt = load_ground_truth(COCO_MINI / "person_keypoints_val2017.json")
    results = study.results_dir("cpu") / "eval"
    for seed in (0, 1, 2):  # a precise heatmap_half row against a coarse heatmaps_quarter row
        for i, (name, noise) in enumerate((("w32_512_ss", 1.0), ("w32_512_heatmaps_quarter", 8.0),
                                           ("w32_512_heatmaps_half", 1.0))):
            _stamped(results / name / f"seed{seed}" / "metrics.json", 0.5)
            planted = _planted_results(gt, noise, 10 * seed + i)  # independent jitter per row and seed
            match_table(gt, planted).save(results / name / f"seed{seed}" / MATCHES)
    _stamped(results / "w32_512_noflip" / "seed0" / "metrics.json", 0.4)  # a row with its first seed only
    match_table(gt, _planted_results(gt, 8.0, 99)).save(results / "w32_512_noflip" / "seed0" / MATCHES)
    gather(study, "cpu", log=lambda *_: None)
    summary = json.loads((study.results_dir("cpu") / "summary.json").read_text())
    assert summary["calibration"]["pairs"] == 3 * 3  # every pair of seeds of each three-seed evaluation
    families = summary["families"]
    checks = {c["comparison"]: c for c in families["heatmap_aggregation"]["checks"]}
    better = checks["w32_512_ss > w32_512_heatmaps_quarter"]
    assert better["low"] > 0 and better["outcome"] == "holds" and better["seeds"] == [3, 3]
    same = checks["w32_512_ss > w32_512_heatmaps_half"]  # equal noise: no decision either way
    assert same["low"] < 0 < same["high"] and same["outcome"] == "undecided"
    assert families["heatmap_aggregation"]["verdict"] == "2 of 2 measured: 1 holds, 1 undecided"
    [partial] = families["test_time"]["checks"]  # paired on the seed both rows have so far
    assert partial["comparison"] == "w32_512_ss > w32_512_noflip" and partial["seeds"] == [1, 1]
    assert families["ae_loss"] == {"checks": [], "unmeasured": [{"comparison": "w32_512_ss ≥ ae_max",
                                                                  "reason": "ae_max not run"}],
                                   "measured": 0, "expected": 1, "verdict": "not measured: 0 of 1 comparisons"}


def test_stamps_do_not_depend_on_where_the_repository_or_cache_is(tmp_path, monkeypatch):
    """A fresh clone elsewhere finds the committed results up to date (absolute paths are not hashed)."""
    from hhrnet.study import run_stamp

    monkeypatch.delenv("HHRNET_CACHE", raising=False)
    stamps = []
    for where in ("a", "b/deeper"):
        (tmp_path / where).mkdir(parents=True)
        study = _write(tmp_path / where, lambda s: None)
        stamps.append({r.name: run_stamp(study, r) for r in study.runs("cpu")})
        assert any(str(tmp_path / where) in json.dumps(r.parameters) for r in study.runs("cpu"))
    assert stamps[0] == stamps[1]


def test_cpu_profiles_plan_the_crowdpose_rows_on_synthetic_crowds():
    """The CrowdPose training and its three evaluations run in the smoke and cpu profiles (the default
    profile keeps the headline and its baseline), with the crowdpose set, on CrowdPose-format synthetic
    crowds of their own data root (generated on demand), while the COCO rows keep the profile's data."""
    study = Study.load(EXPERIMENTS)
    assert "crowdpose_w32_512" not in study.trainings("default")
    for profile in ("smoke", "cpu"):
        runs = {r.name: r for r in study.runs(profile)}
        seeds = study.profile_spec(profile).seeds
        for seed in seeds:
            train = runs[f"train/crowdpose_w32_512/seed{seed}"]
            cfg = yaml.safe_load(train.parameters["config_yaml"])
            assert cfg["data"]["keypoints"] == "crowdpose" and "num_joints" not in cfg["model"]  # it follows the set
            synthetic = json.loads(train.parameters["synthetic_json"])
            assert synthetic["keypoints"] == "crowdpose" and synthetic["scene"]["group_prob"] == 0.9
            profile_data = study.profile_spec(profile).data
            assert (synthetic["train"], synthetic["size"]) == (profile_data.train, profile_data.size)
            root = cfg["train"]["data_root"]
            assert root.endswith("_crowdpose") and root != study.data_spec(profile)["data_root"]
            assert root == study.data_spec(profile, "crowdpose_w32_512")["data_root"]
            # the paper profile starts from ImageNet, the cpu profile from its trunk, the smoke one from scratch
            trunk = study.root / "pretrained" / "trunk_w16.pth"
            assert cfg["train"]["pretrained"] == (str(trunk) if profile == "cpu" else None)
            assert train.inputs == ((str(trunk),) if profile == "cpu" else ())
            for ev in ("crowdpose_w32_512_ss", "crowdpose_w32_512_ms", "crowdpose_w32_512_ms21"):
                run = runs[f"eval/{ev}/seed{seed}"]
                ecfg = yaml.safe_load(run.parameters["config_yaml"])
                assert run.needs == (train.name,) and ecfg["data"]["keypoints"] == "crowdpose"
                assert ecfg["train"]["data_root"] == root
        coco = yaml.safe_load(runs["train/w32_512/seed0"].parameters["config_yaml"])
        assert coco["data"]["keypoints"] == "coco" and coco["train"]["data_root"] == study.data_spec(profile)["data_root"]
        roots = [d["data_root"] for d in study.data_specs(profile)]
        assert len(roots) == 2 and root in roots  # both synthetic sets are generated when their runs need them
    paper = study.training_config("crowdpose_w32_512", "paper")
    assert paper.train.data_root == "data/crowd_pose" and paper.train.pretrained == "hrnet_w32_imagenet"
    assert study.training_config("w32_512", "paper").train.data_root == "data/coco"


def test_published_crowdpose_rows_carry_labels_and_the_crowds_family_compares_crowd_splits():
    from hhrnet.study import METRIC_KEYS, Expectation

    spec = load_spec(EXPERIMENTS / "rows.yaml")
    assert [r["label"] for r in spec.published["official_crowdpose"].rows] == ["HigherHRNet", "HigherHRNet+"]
    assert {"AP_easy", "AP_medium", "AP_hard"} <= set(METRIC_KEYS)
    expect = spec.families["crowds"].expect
    assert Expectation("crowdpose_w32_512_ss", ">", "crowdpose_w32_512_ss", "AP_easy", "AP_medium") in expect
    assert Expectation.parse("crowdpose_w32_512_ss.AP_easy > crowdpose_w32_512_ss.AP_medium").text == \
        "crowdpose_w32_512_ss.AP_easy > crowdpose_w32_512_ss.AP_medium"


def test_a_result_records_the_sources_it_ran_and_goes_stale_when_one_changes(tmp_path):
    """``code``: a hash per imported hhrnet source (scheduling code aside); an edit or a deletion is found."""
    import hhrnet.losses  # noqa: F401  (a run imports the network and its loss)
    import hhrnet.model  # noqa: F401
    from hhrnet.study.provenance import PACKAGE_DIR, code_changes, code_used

    used = code_used()
    assert "model.py" in used and "study/notebook.py" in used
    assert "study/runner.py" not in used and "cli.py" not in used
    copy = tmp_path / "hhrnet"
    for rel in used:
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PACKAGE_DIR / rel, copy / rel)
    assert code_changes(used, copy) == []
    (copy / "model.py").write_text((copy / "model.py").read_text() + "\n# an edit\n")
    (copy / "losses.py").unlink()
    assert code_changes(used, copy) == ["losses.py", "model.py"]
    assert code_changes(None, copy) and code_changes({}, copy)


def test_an_evaluation_is_stale_when_its_training_result_changed(tmp_path):
    """Re-training (other code, same parameters) makes every evaluation of that network stale."""
    from hhrnet.study import code_used, result_id, run_stamp, run_status

    study = _write(tmp_path, lambda s: None)
    runs = {r.name: r for r in study.runs("cpu")}
    train, evaluation = runs["train/w32_512/seed0"], runs["eval/w32_512_ss/seed0"]

    def finish(run, **extra):
        path = study.results_dir("cpu") / run.name / "metrics.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        metrics = {"AP": 0.5, "stamp": run_stamp(study, run), "code": code_used(), **extra}
        path.write_text(json.dumps(metrics))
        return metrics

    trained = finish(train)
    finish(evaluation, training_id=result_id(trained))
    assert run_status(study, "cpu", train) == run_status(study, "cpu", evaluation) == "done"
    finish(train, iterations=1)  # same stamp and code: the same result
    assert run_status(study, "cpu", evaluation) == "done"
    finish(train, code={**code_used(), "model.py": "0" * 16})  # trained by other code
    assert run_status(study, "cpu", train) == run_status(study, "cpu", evaluation) == "stale"
    assert run_status(study, "cpu", runs["eval/w32_512_ss/seed1"]) == "missing"


def test_the_summary_leaves_stale_results_out_and_is_gathered_after_each_evaluation(tmp_path, monkeypatch):
    """A study that runs for days never averages a stale result with current ones: ``gather_current`` names
    it in ``skipped`` (``--missing-only`` keeps it, as asked); and the summary follows each finished
    evaluation, so the book shows what has run."""
    from hhrnet.study import code_used, gather_current, result_id, run_stamp
    from hhrnet.study import runner

    study = _write(tmp_path, lambda s: None)
    runs = {r.name: r for r in study.runs("cpu")}

    def finish(study, profile, run, ap=0.5, **extra):
        path = study.results_dir(profile) / run.name / "metrics.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        trained = [json.loads((study.results_dir(profile) / n / "metrics.json").read_text()) for n in run.needs]
        metrics = {"AP": ap, "stamp": run_stamp(study, run), "code": code_used(),
                   **({"training_id": result_id(trained[0])} if trained else {}), **extra}
        path.write_text(json.dumps(metrics))

    finish(study, "cpu", runs["train/w32_512/seed0"])
    finish(study, "cpu", runs["train/w32_512/seed1"])
    finish(study, "cpu", runs["eval/w32_512_ss/seed0"], ap=0.5)
    finish(study, "cpu", runs["eval/w32_512_ss/seed1"], ap=0.9, code={**code_used(), "model.py": "0" * 16})
    summary = json.loads(gather_current(study, "cpu").with_suffix(".json").read_text())
    row = {r["evaluation"]: r for r in summary["rows"]}["w32_512_ss"]
    assert (row["seeds"], row["AP"]) == (1, 0.5)
    assert summary["skipped"] == [{"file": "results/cpu/eval/w32_512_ss/seed1/metrics.json", "reason": runner.STALE}]
    kept = json.loads(gather_current(study, "cpu", keep_stale=True).with_suffix(".json").read_text())  # --missing-only
    assert {r["evaluation"]: r for r in kept["rows"]}["w32_512_ss"]["AP"] == pytest.approx(0.7) and "skipped" not in kept

    monkeypatch.setattr(runner, "execute", finish)
    runner.run_pending(study, "cpu", [runs["eval/w32_512_ss/seed1"]], force=False, wait=True, log=lambda _: None)
    summary = json.loads((study.results_dir("cpu") / "summary.json").read_text())
    row = {r["evaluation"]: r for r in summary["rows"]}["w32_512_ss"]
    assert (row["seeds"], row["AP"]) == (2, 0.5) and "skipped" not in summary


def test_the_book_networks_keep_seed_zero_weights_only():
    """``keep_weights``: one fp16 copy per kept training (its first seed), so the results stay small."""
    study = Study.load(EXPERIMENTS)
    kept = sorted(r.name for r in study.runs("cpu") if r.parameters.get("keep_weights"))
    assert kept == ["train/crowdpose_w32_512/seed0", "train/hrnet_baseline/seed0", "train/w32_512/seed0"]


def test_runs_go_seed_by_seed_each_training_with_its_evaluations():
    """An interrupted study has whole rows: every row's first seed before any second one, and each
    training's evaluations right after it."""
    runs = Study.load(EXPERIMENTS).runs("cpu")
    seeds = [r.seed for r in runs if r.kind == "train"]
    assert seeds == sorted(seeds) and seeds[0] == 0
    for i, run in enumerate(runs):
        if run.needs:
            trained = [r.name for r in runs[:i] if r.kind == "train"]
            assert trained[-1] == run.needs[0], run.name


def test_diagnostics_are_a_parameter_of_the_evaluations_that_ask_for_them_only(tmp_path):
    """``diagnostics: true`` reaches the evaluate notebook as a papermill parameter of that evaluation alone, and
    switching it makes that evaluation stale (its stamp changes) while every other run keeps its stamp."""
    from hhrnet.study import run_stamp

    for folder in ("before", "after"):
        (tmp_path / folder).mkdir()
    before = _write(tmp_path / "before", lambda s: None)
    runs = {r.name: r for r in before.runs("cpu")}
    asked = {n for n, e in before.definition.evaluations.items() if e.diagnostics}
    assert {"w32_512_ss", "crowdpose_w32_512_ss", "hrnet_baseline"} <= asked and "w32_512_ms" not in asked
    assert {r.name.split("/")[1] for r in runs.values() if "diagnostics" in r.parameters} == asked
    assert all(r.parameters["diagnostics"] is True for r in runs.values() if "diagnostics" in r.parameters)

    after = _write(tmp_path / "after", lambda s: s["evaluations"]["w32_512_ms"].update(diagnostics=True))
    changed = {r.name for r in after.runs("cpu") if run_stamp(after, r) != run_stamp(before, runs[r.name])}
    assert changed == {f"eval/w32_512_ms/seed{seed}" for seed in after.profile_spec("cpu").seeds}


def _diagnosed(path, ap, gt_tags, gt_heatmaps, single):
    """A stamped evaluation result with the keys the evaluate notebook writes for ``diagnostics: true``."""
    from hhrnet.study import diagnostic_metrics

    values = {"AP": ap, "AP_gt_tags": gt_tags, "AP_gt_heatmaps": gt_heatmaps, "AP_ceiling": 0.9, "AP_single": single,
              "AP_multi": ap - 0.05, "n_images": 10, "n_single": 0 if single is None else 4, "n_multi": 6, "n_empty": 0}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"AP": ap, "stamp": "abc", **diagnostic_metrics(values)}))


def test_gather_carries_the_diagnostics_with_their_spread_over_seeds(tmp_path):
    from hhrnet.study import DIAGNOSTIC_KEYS

    study = _write(tmp_path, lambda s: None)
    results = study.results_dir("cpu") / "eval"
    _diagnosed(results / "w32_512_ss" / "seed0" / "metrics.json", 0.30, 0.35, 0.70, 0.40)
    _diagnosed(results / "w32_512_ss" / "seed1" / "metrics.json", 0.40, 0.45, 0.80, None)  # no single-person image
    _stamped(results / "w32_512_ms" / "seed0" / "metrics.json", 0.5)
    gather(study, "cpu", log=lambda *_: None)
    rows = {r["evaluation"]: r for r in json.loads((study.results_dir("cpu") / "summary.json").read_text())["rows"]}
    row = rows["w32_512_ss"]
    assert row["diag_AP_gt_tags"] == pytest.approx(0.40) and row["diag_AP_gt_heatmaps"] == pytest.approx(0.75)
    assert row["diag_AP_gt_tags_std"] == pytest.approx(0.0707, abs=1e-4) and row["diag_AP_ceiling_std"] == 0
    assert row["diag_AP_single"] == pytest.approx(0.40) and row["diag_AP_single_std"] is None  # one seed has it
    assert (row["diag_n_images"], row["diag_n_multi"]) == (10, 6)
    assert all(rows["w32_512_ms"][k] is None for k in DIAGNOSTIC_KEYS)
    header = (study.results_dir("cpu") / "summary.csv").read_text().splitlines()[0].split(",")
    assert {"diag_AP_gt_tags", "diag_AP_gt_tags_std", "diag_n_single"} <= set(header)
