"""The study: published configs in the `paper` profile, the smoke profile end to end, failures."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from hhrnet.config import preset
from hhrnet.study import (DIAGNOSTIC_KEYS, Registration, Study, StudyError, generate_synthetic, preregistration,
                          run_study, summary_rows)
from hhrnet.study.results import family_verdict, published_agreement
from hhrnet.study.runner import run_stamp, run_status, select_runs

sys.path.insert(0, str(REPO / "book"))
import verdicts  # noqa: E402  (book/verdicts.py: the ablations chapter's words)

EXPERIMENTS = REPO / "experiments"


@pytest.fixture
def experiments(tmp_path, monkeypatch):
    """A copy of the study definition and notebooks, so runs don't touch the repository."""
    target = tmp_path / "experiments"
    target.mkdir()
    for name in ("rows.yaml", "train.ipynb", "evaluate.ipynb"):
        shutil.copy(EXPERIMENTS / name, target / name)
    monkeypatch.delenv("HHRNET_CACHE", raising=False)
    return target


@pytest.mark.parametrize("row,width,size,batch", [("w32_512", 32, 512, 24), ("w32_640", 32, 640, 16),
                                                   ("w48_512", 48, 512, 16)])
def test_paper_profile_is_the_published_configuration(row, width, size, batch):
    """Field by field: the `paper` profile trains and tests exactly the mmpose 0.x configs."""
    study = Study.load(EXPERIMENTS)
    cfg = study.training_config(row, "paper")
    assert cfg.train.pretrained == f"hrnet_w{width}_imagenet"  # the official PRETRAINED, by its hub name
    assert cfg.override(**{"name": row, "train.pretrained": None}) == preset(row)
    m, d, loss, t, test = cfg.model, cfg.data, cfg.loss, cfg.train, cfg.test
    assert (m.width, cfg.input_size, m.num_deconvs, m.num_basic_blocks, m.cat_output, m.with_ae_loss) == \
        (width, size, 1, 4, True, (True, False))
    assert (m.stage_modules, m.blocks_per_branch, m.tag_per_joint) == ((1, 4, 3), 4, True)
    assert (m.num_joints, m.stem_channels, m.layer1_blocks, m.layer1_planes, m.deconv_kernel, m.final_conv_kernel) == \
        (17, 64, 4, 64, 4, 1)
    assert (d.mean, d.std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert d.flip_index == (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)
    assert (d.sigma, d.scale_aware_sigma, d.max_people, d.max_rotation, d.min_scale, d.max_scale,
            d.scale_type, d.max_translate, d.flip_prob) == (2.0, False, 30, 30.0, 0.75, 1.5, "short", 40.0, 0.5)
    assert (loss.ae_type, loss.with_heatmaps_loss, loss.heatmaps_loss_factor, loss.push_loss_factor,
            loss.pull_loss_factor) == ("exp", (True, True), (1.0, 1.0), (0.001, 0.001), (0.001, 0.001))
    assert (t.schedule, t.base_lr, t.epochs, t.lr_steps, t.lr_gamma, t.batch_size, t.amp) == \
        ("mmpose", 1.5e-3, 300, (200, 260), 0.1, batch, "auto")
    assert (t.accumulate, t.sync_bn) == (1, False)  # 8 GPUs x 24 images, plain BatchNorm per GPU
    assert t.lr_at(0, 1000) == pytest.approx(1.5e-6) and t.lr_at(500, 1000) == pytest.approx(1.5e-3)
    assert (t.data_root, t.train_split, t.val_split) == ("data/coco", "train2017", "val2017")
    assert (test.flip_test, test.scales, test.project2image, test.align_corners, test.nms_kernel,
            test.max_people, test.detection_threshold, test.tag_threshold, test.use_detection_val,
            test.ignore_too_much, test.adjust, test.refine) == \
        (True, (1.0,), True, False, 5, 30, 0.1, 1.0, True, False, True, True)
    multi = study.evaluation_config(f"{row}_ms", "paper")
    assert multi.test.scales == (2.0, 1.0, 0.5) and multi.model == cfg.model


def test_published_rows_name_real_evaluations():
    study = Study.load(EXPERIMENTS)
    for source in study.spec["published"].values():
        assert source["source"] and source["url"]
        for row in source["rows"]:  # a study evaluation, or a label (a published row the study does not reproduce)
            assert row["evaluation"] in study.spec["evaluations"] if "evaluation" in row else row["label"]
            assert 0.6 < row["AP"] < 0.75


def test_cpu_input_sizes_keep_the_published_order():
    """512 < 640 < 768 stay distinct and ordered, so the input-size family is not confounded."""
    study = Study.load(EXPERIMENTS)
    sizes = [study.training_config(name, "cpu").input_size for name in ("w32_512", "w32_640", "w32_768")]
    assert sizes == sorted(set(sizes)), sizes


def test_profiles_scale_every_training():
    study = Study.load(EXPERIMENTS)
    for name in study.spec["trainings"]:
        paper = study.training_config(name, "paper")
        for profile in ("smoke", "default", "cpu"):
            cfg = study.training_config(name, profile)
            assert cfg.input_size % 64 == 0 and cfg.input_size < paper.input_size  # the test resize keeps it
            assert cfg.model.width < paper.model.width
            assert cfg.model.num_deconvs == paper.model.num_deconvs
            # a profile may scale the loss factors (the CPU recipe), never the structure of the loss
            assert (cfg.loss.ae_type, cfg.loss.with_heatmaps_loss) == (paper.loss.ae_type, paper.loss.with_heatmaps_loss)
            assert cfg.loss.heatmaps_loss_factor == paper.loss.heatmaps_loss_factor


@pytest.mark.slow
def test_smoke_profile_end_to_end(experiments):
    """The headline and the 1/4-output baseline run through papermill, by two worker processes, with every
    test-time variant of the headline, and the CrowdPose training with its single-scale evaluation on
    its own synthetic crowds; metrics files are complete (with diagnostics where rows.yaml asks for them);
    the summary has their rows; a re-run runs nothing.  (CI runs the whole smoke profile before the tests:
    `make study PROFILE=smoke`.)"""
    only = ["train/w32_512/", "eval/w32_512_", "hrnet_baseline", "crowdpose_w32_512_ss"]
    cli = subprocess.run([sys.executable, "-m", "hhrnet", "study", "--profile", "smoke", "--experiments", str(experiments),
                          "--workers", "2", "--only", *only], capture_output=True, text=True, timeout=1800)
    assert cli.returncode == 0, cli.stderr[-3000:]
    study = Study.load(experiments)
    planned = [r.name for r in select_runs(study.runs("smoke"), only)]
    executed = re.findall(r"\] (\S+): \d+ s$", cli.stdout, flags=re.M)
    assert sorted(executed) == sorted(planned), cli.stdout  # each run once, by one of the two workers
    results = experiments / "results" / "smoke"
    evaluated = [n.split("/")[1] for n in planned if n.startswith("eval/")]
    assert {"w32_512_ss", "w32_512_ms", "w32_512_heatmaps_half", "hrnet_baseline", "crowdpose_w32_512_ss"} <= set(evaluated)
    for name in evaluated:
        metrics = json.loads((results / "eval" / name / "seed0" / "metrics.json").read_text())
        # the protocol of the evaluation's keypoint set: COCO's area ranges or CrowdPose's crowd splits
        crowd = study.evaluation_config(name, "smoke").data.keypoint_set.protocol == "crowdpose"
        splits = ("AP_easy", "AP_medium", "AP_hard") if crowd else ("AP_M", "AP_L")
        for key in ("AP", "AP50", "AP75", *splits, "AR", "AR50", "parameters", "gflops", "train_seconds",
                    "seed", "git_commit", "config", "stamp", "code", "training_id"):
            assert key in metrics, (name, key)
        assert 0.0 <= metrics["AP"] <= 1.0
        assert (results / "eval" / name / "seed0" / "evaluate.ipynb").exists()
        if study.definition.evaluations[name].diagnostics:  # the network's own pass equals the evaluation's
            assert set(DIAGNOSTIC_KEYS) <= metrics.keys() and metrics["diag_AP"] == pytest.approx(metrics["AP"])
            assert metrics["diag_n_images"] == 4 and "diagnostics.py" in metrics["code"]
        else:  # and an evaluation without them does not depend on their source
            assert "diag_AP" not in metrics and "diagnostics.py" not in metrics["code"]
    for name in ("w32_512", "hrnet_baseline", "crowdpose_w32_512"):
        assert (results / "train" / name / "seed0" / "loss.png").exists()
    assert (results / "train" / "w32_512" / "seed0" / "weights.pth").exists()  # keep_weights
    summary = results / "summary.csv"
    assert sorted(line.split(",")[0] for line in summary.read_text().splitlines()[1:]) == sorted(evaluated)
    assert {"w32_512_ss", "crowdpose_w32_512_ss"} <= {r["evaluation"] for r in summary_rows(study, "smoke").values()
                                                     if r["diag_AP_ceiling"] is not None}
    messages = []
    run_study(experiments, "smoke", only=only, log=messages.append)
    assert "0 to run" in messages[0]


def test_a_trunk_is_stamped_by_its_bytes_and_a_missing_one_names_the_lever_that_trains_it(experiments):
    study = Study.load(experiments)
    run = next(r for r in study.runs("cpu") if r.name == "train/w32_512/seed0")
    trunk = experiments / "pretrained" / "trunk_w16.pth"
    assert run.inputs == (str(trunk),)
    trunk.parent.mkdir()
    trunk.write_bytes(b"one trunk")
    first = run_stamp(study, run)
    trunk.write_bytes(b"another trunk")
    assert run_stamp(study, run) != first  # re-training the trunk makes every training from it stale
    trunk.unlink()
    with pytest.raises(StudyError, match=r"trunk_w16.pth is missing: the trainings of profile 'cpu' start from it; "
                                         r"`python experiments/levers.py trunk_w16` trains it"):
        run_study(experiments, "cpu", only=["train/w32_512/seed0"], log=lambda *_: None)


def test_failing_notebook_names_run_and_cell(experiments):
    spec = yaml.safe_load((experiments / "rows.yaml").read_text())
    spec["profiles"]["paper"]["data"]["coco"]["root"] = str(experiments / "no_such_coco")
    spec["profiles"]["paper"].pop("backbones")  # no ImageNet download first (offline): the data fails
    (experiments / "rows.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(StudyError, match=r"train/w32_512/seed0 failed in cell \d+ \(DatasetError"):
        run_study(experiments, "paper", only=["train/w32_512/"], log=lambda *_: None)
    assert not (experiments / "results" / "paper" / "train" / "w32_512" / "seed0" / "metrics.json").exists()
    assert (experiments / "results" / "paper" / "train" / "w32_512" / "seed0.failed" / "train.ipynb").exists()


def test_synthetic_scene_knobs_name_the_data_folder_and_are_checked(tmp_path):
    """Profiles with different scene knobs never share a cached data folder; a bad knob is one error."""
    study = Study.load(EXPERIMENTS)
    default, smoke = study.data_spec("default"), study.data_spec("smoke")
    assert default["synthetic"]["scene"]["front_facing_prob"] == 0.85
    assert default["data_root"] != smoke["data_root"] and default["data_root"].endswith(
        study.data_spec("cpu")["data_root"].rsplit("_", 1)[1])  # same scenes, same hash suffix
    with pytest.raises(StudyError, match=r"data.synthetic.scene in experiments/rows.yaml: .*no_such_knob"):
        generate_synthetic(tmp_path, {"train": 1, "val": 1, "size": 64, "seed": 0, "scene": {"no_such_knob": 1}})


@pytest.mark.parametrize("outcomes, expected, verdict", [
    (["holds"], 5, "1 of 5 measured: 1 holds"),  # never "reproduces" while a comparison is unmeasured
    (["holds", "holds"], 2, "reproduces: every comparison holds (2 of 2)"),
    (["holds", "undecided"], 2, "2 of 2 measured: 1 holds, 1 undecided"),
    (["contradicted"], 1, "contradicted: every comparison is (1 of 1)"),
    ([], 3, "not measured: 0 of 3 comparisons"),
])
def test_a_family_verdict_counts_only_what_was_measured(outcomes, expected, verdict):
    assert family_verdict(outcomes, expected) == verdict


def _measured(comparison: str, outcome: str, delta: float, low: float, high: float, **extra) -> dict:
    """A comparison as ``gather`` writes it into ``summary.json``'s ``families``."""
    return {"comparison": comparison, "delta": delta, "low": low, "high": high, "seeds": [3, 3], "images": 1000,
            "outcome": outcome, "metrics": {}, "against_AP": [], **extra}


def _interval(check: dict) -> str:
    return f"{100 * check['delta']:+.1f} [{100 * check['low']:.1f}, {100 * check['high']:.1f}]"


def test_a_family_reading_embeds_the_intervals_and_the_text_of_each_measured_outcome():
    """The numbers come from the summary, the words from the book's readings of the outcomes measured."""
    spec = Study.load(EXPERIMENTS).definition
    family, words = spec.families["deconv_modules"], verdicts.FAMILIES["deconv_modules"]
    measured = {"checks": [_measured("w32_512_ss > hrnet_baseline", "contradicted", -0.015, -0.025, -0.005),
                           _measured("w32_512_ss ≥ deconv_2", "undecided", 0.001, -0.009, 0.011)]}
    text = verdicts.family_reading("deconv_modules", family, measured, spec.published, "cpu", _interval)
    assert "`w32_512_ss` − `hrnet_baseline`: -1.5 [-2.5, -0.5] AP points" in text
    assert "`w32_512_ss > hrnet_baseline` is contradicted; published: +2.7 AP (paper, Table 5, (e) − (a))." in text
    assert "`w32_512_ss ≥ deconv_2` is undecided." in text  # no published row for two modules
    assert words.contradicted in text and words.undecided in text and words.holds not in text
    assert text.index(words.contradicted) < text.index(words.undecided)
    assert "Beyond AP" not in text

    holds = {"checks": [_measured("w32_512_ss > hrnet_baseline", "holds", 0.02, 0.01, 0.03)]}
    text = verdicts.family_reading("deconv_modules", family, holds, spec.published, "cpu", _interval)
    assert "+2.0 [1.0, 3.0]" in text and words.holds in text
    assert words.contradicted not in text and words.undecided not in text


def test_a_metric_that_moves_against_ap_beyond_noise_is_read():
    """Multi-scale test raising AP while lowering AP(L): the reading says so, with why at this scale."""
    spec = Study.load(EXPERIMENTS).definition
    check = _measured("w32_512_ms > w32_512_ss", "holds", 0.024, 0.011, 0.037, against_AP=["AP_L"],
                      metrics={"AP_L": {"delta": -0.076, "low": -0.095, "high": -0.056}})
    text = verdicts.family_reading("test_time", spec.families["test_time"], {"checks": [check]}, spec.published, "cpu",
                                   _interval)
    assert "*Beyond AP.* `w32_512_ms` − `w32_512_ss`: AP +2.4 [1.1, 3.7], but AP(L) -7.6 [-9.5, -5.6]" in text
    assert verdicts.BEYOND_AP[("test_time", "AP_L")] in text


def test_an_unmeasured_family_reading_says_what_it_needs():
    spec = Study.load(EXPERIMENTS).definition
    measured = {"checks": [], "unmeasured": [{"comparison": "w32_512_ss ≥ ae_max", "reason": "ae_max not run"}]}
    text = verdicts.family_reading("ae_loss", spec.families["ae_loss"], measured, spec.published, "default", _interval)
    assert text == ("*Not measured in the `default` profile: no comparison of this family has a 95% interval yet.* "
                    "It needs:\n\n* `w32_512_ss ≥ ae_max`: ae_max not run.")


def test_every_family_has_its_words_in_the_book_and_they_name_no_measured_number():
    """A reading's words are chosen by the outcome; the numbers it could contradict are printed beside it."""
    spec = Study.load(EXPERIMENTS).definition
    assert set(verdicts.FAMILIES) == set(spec.families)
    for name, words in verdicts.FAMILIES.items():
        for outcome in ("holds", "contradicted", "undecided"):
            assert not re.search(r"\bAP\s*[-+−]?\d|\d\s*AP\b|\d\s*%", words.reading(outcome)), (name, outcome)


@pytest.mark.parametrize("gt_tags, gt_heatmaps, std, weaker", [
    (0.25, 0.80, None, "Its heatmaps are the weaker half: given perfect tags they reach 55.0 AP points less"),
    (0.80, 0.25, None, "Its tags (the grouping) are the weaker half: given perfect heatmaps they reach 55.0 AP points"),
    (0.50, 0.52, 0.02, "Neither half limits it clearly more: the two substitutions differ by 2.0 AP points"),
])
def test_a_diagnostic_reading_names_the_weaker_half(gt_tags, gt_heatmaps, std, weaker):
    row = {"diag_AP": 0.2, "diag_AP_gt_tags": gt_tags, "diag_AP_gt_heatmaps": gt_heatmaps, "diag_AP_ceiling": 0.9,
           "diag_AP_single": 0.3, "diag_AP_multi": None, "diag_AP_gt_tags_std": std}
    points = lambda r, k: "–" if r.get(k) is None else f"{100 * r[k]:.1f}"  # noqa: E731  (the book's format)
    text = verdicts.diagnostic_reading("w32_512_ss", row, points)
    assert text.startswith(f"`w32_512_ss` scores 20.0 AP; with perfect tags (its own heatmaps) {100 * gt_tags:.1f}")
    assert weaker in text and text.endswith("on multi-person images –.")
    assert "It reaches 22% of the ceiling of its output resolution." in text  # 0.2 of 0.9


def test_the_committed_cpu_summary_is_calibrated_and_wide_enough():
    """The committed summary (re-gathered from the committed results): every comparison between two trainings
    is at least as wide as the seed noise alone implies, no family with an unmeasured comparison reads
    "reproduces", its A/A calibration makes at most 5% false calls; and once every cpu run is current (the
    study complete), that calibration rests on at least four pairs."""
    study = Study.load(EXPERIMENTS)
    summary = json.loads((EXPERIMENTS / "results" / "cpu" / "summary.json").read_text())
    calibration = summary["calibration"]
    if calibration["pairs"]:
        assert calibration["false_positive_rate"] <= 0.05
    pooled = summary["seed_noise"]["between_trainings"]["AP"]
    trainings = 0
    for family in summary["families"].values():
        assert family["measured"] == len(family["checks"])
        assert family["expected"] == family["measured"] + len(family["unmeasured"])
        if family["unmeasured"]:
            assert "reproduces" not in family["verdict"]
        for c in family["checks"]:
            if c["noise"].startswith("two trainings"):
                trainings += 1
                na, nb = c["seeds"]
                floor = 1.96 * pooled["sd"] * (1 / na + 1 / nb) ** 0.5
                assert (c["high"] - c["low"]) / 2 >= floor, c
    if all(run_status(study, "cpu", r) == "done" for r in study.runs("cpu")):
        assert calibration["pairs"] >= 4
        assert trainings >= 4  # higher_resolution, deconv_modules ×2, multires_supervision


def test_expectations_changed_after_results_are_told_and_no_history_reads_unavailable(tmp_path):
    """A family whose ``expect`` changed in a commit after its first result says so; without git history
    (no repository at all, or a shallow clone) every family reads "history unavailable"."""
    repo = tmp_path / "repo"
    (repo / "experiments").mkdir(parents=True)
    for name in ("rows.yaml", "train.ipynb", "evaluate.ipynb"):
        shutil.copy(EXPERIMENTS / name, repo / "experiments" / name)

    def git(*args):
        out = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, capture_output=True,
                             text=True, check=True)
        return out.stdout.strip()

    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "claims first")
    first = git("rev-parse", "HEAD")
    metrics = repo / "experiments" / "results" / "cpu" / "eval" / "w32_512_ss" / "seed0" / "metrics.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text(json.dumps({"AP": 0.3, "stamp": "x", "git_commit": first[:7]}))
    rows = repo / "experiments" / "rows.yaml"
    rows.write_text(rows.read_text().replace('expect: ["w32_512_ss > no_multires_supervision"]',
                                             'expect: ["w32_512_ss ≥ no_multires_supervision"]'))
    git("commit", "-q", "-am", "claim changed after the result")
    changed = git("rev-parse", "HEAD")
    found = preregistration(Study.load(repo / "experiments"), "cpu")
    assert found["multires_supervision"] == Registration(changed, first[:7], True, True)
    assert found["higher_resolution"] == Registration(first, first[:7], False, True)
    assert found["published_weights"].first_result is None and found["published_weights"].changed_after_results is None

    unavailable = {Registration(None, None, None, False)}
    bare = tmp_path / "bare"
    shutil.copytree(repo / "experiments", bare)
    assert set(preregistration(Study.load(bare), "cpu").values()) == unavailable
    shallow = tmp_path / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{repo}", str(shallow)], check=True)
    assert set(preregistration(Study.load(shallow / "experiments"), "cpu").values()) == unavailable


def test_a_malformed_or_unknown_expectation_is_one_error(experiments):
    spec = yaml.safe_load((experiments / "rows.yaml").read_text())
    spec["families"]["ae_loss"]["expect"] = ["w32_512_ss >> ae_max"]
    (experiments / "rows.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True))
    with pytest.raises(StudyError, match=r"rows.yaml: families.ae_loss.expect: expectation 'w32_512_ss >> ae_max'"):
        Study.load(experiments)
    spec["families"]["ae_loss"]["expect"] = ["w32_512_ss > no_such_run"]
    (experiments / "rows.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True))
    with pytest.raises(StudyError, match=r"rows.yaml: families.ae_loss: names unknown evaluations \['no_such_run'\]"):
        Study.load(experiments)


def test_published_agreement_compares_each_published_row_within_its_tolerance():
    """`compare_published` of the published_weights family: hhrnet's AP on mmpose's weights beside mmpose's row."""
    definition = Study.load(EXPERIMENTS).definition
    family = definition.families["published_weights"]
    tolerance = family.compare_published["tolerance_AP"]
    mmpose = {r["evaluation"]: r["AP"] for r in definition.published["mmpose"].rows}
    rows = {"published_w32_512_ss": {"AP": mmpose["w32_512_ss"] + tolerance / 2},   # within
            "published_w48_512_ms": {"AP": mmpose["w48_512_ms"] - 3 * tolerance}}   # beyond
    agreement = {a["evaluation"]: a for a in published_agreement(definition, "published_weights", rows)}
    assert set(agreement) == set(rows)  # unmeasured evaluations are left out
    assert agreement["published_w32_512_ss"]["within"] and agreement["published_w32_512_ss"]["published row"] == \
        "mmpose w32_512_ss"
    assert not agreement["published_w48_512_ms"]["within"]
    assert agreement["published_w48_512_ms"]["ΔAP"] == pytest.approx(-3 * tolerance)
    assert published_agreement(definition, "table", rows) == []  # a family without compare_published


@pytest.mark.parametrize("profile", ["cpu", "default"])
def test_scale_aware_sigma_keeps_the_papers_width_relative_to_the_person(profile):
    """Scale-aware sigma is max(box) / base_size * base_sigma in image pixels, drawn on the output grid, so its
    width relative to a person goes as image size / (base_size * input size): keep the paper's (COCO's 640 px
    images, input 512, base_size 256) at CPU scale."""
    study = Study.load(EXPERIMENTS)
    cfg = study.training_config("scale_aware_sigma", profile)
    image = study.data_spec(profile)["synthetic"]["size"]
    paper = study.training_config("scale_aware_sigma", "paper")
    assert paper.data.scale_aware_base_size(paper.input_size) == 256
    relative = image / (cfg.data.scale_aware_base_size(cfg.input_size) * cfg.input_size)
    assert relative == pytest.approx(640 / (256 * 512), rel=0.05)
