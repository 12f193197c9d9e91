"""The one-cell API: hhrnet.load_model, hhrnet.Predictor (predict, maps), hhrnet.evaluate; the names a
newcomer sees in ``dir`` and ``help``; the README's Python API section, run cell by cell."""

from __future__ import annotations

import os
import pydoc
import re
import shlex
import subprocess
import sys
import warnings

import matplotlib
import numpy as np
import pytest
import torch

import hhrnet
from conftest import REPO
from hhrnet import viz
from hhrnet.cli import main
from hhrnet.checkpoints import save_checkpoint
from hhrnet.config import Config
from hhrnet.grouping import group
from hhrnet.sections import ModelConfig, TestConfig

TINY = Config(name="tiny", input_size=128, model=ModelConfig(
    width=8, stem_channels=16, layer1_blocks=1, layer1_planes=16, stage_modules=(1, 1, 1),
    blocks_per_branch=1, num_basic_blocks=1))


def test_import_is_light_and_exports_the_api():
    code = ("import sys, hhrnet; heavy = [m for m in ('cv2', 'pycocotools', 'hhrnet.inference') if m in sys.modules]; "
            "assert not heavy, heavy; hhrnet.Predictor; hhrnet.load_model; hhrnet.evaluate; hhrnet.Maps")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    from hhrnet import evaluation, inference

    assert hhrnet.Predictor is inference.Predictor and hhrnet.evaluate is evaluation.evaluate
    assert inference.evaluate_dataset is evaluation.evaluate  # the former home still works (issue #26 removes it)
    with pytest.raises(AttributeError):
        hhrnet.no_such_name


def test_load_model_from_a_preset_or_a_checkpoint(tmp_path):
    model, cfg = hhrnet.load_model("w32_512", weights=False)
    assert cfg == hhrnet.preset("w32_512") and not model.training and hhrnet.count_parameters(model) == 28_645_331
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "tiny.pth", hhrnet.HigherHRNet(TINY.model), TINY)
    loaded, loaded_cfg = hhrnet.load_model(path)
    assert loaded_cfg == TINY and not loaded.training
    predictor = hhrnet.Predictor(str(path), test=TestConfig(flip_test=False))
    assert predictor.cfg == TINY and predictor.test.flip_test is False


def test_maps_are_what_predict_groups():
    """``maps`` gives exactly the aggregated maps ``predict`` groups, and the warp back to the image."""
    torch.manual_seed(0)
    predictor = hhrnet.Predictor(hhrnet.HigherHRNet(TINY.model), TINY, TestConfig(scales=(2.0, 1.0)), batch_size=2)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, hw + (3,), dtype=np.uint8) for hw in [(100, 150), (150, 100), (100, 150)]]
    maps, poses = predictor.maps(images), predictor.predict(images)
    assert [len(p) for p in predictor(images)] == [len(p) for p in poses]
    for m, p in zip(maps, poses):
        assert m.heatmaps.shape[0] == 17 and m.tags.shape[:3] == m.heatmaps.shape
        [grouped] = group(m.heatmaps[None], m.tags[None], predictor.test, predictor.keypoints)
        np.testing.assert_array_equal(m.to_image(grouped.joints)[..., :3], p.keypoints)
        xy = np.array([[10.0, 20.0], [60.0, 80.0]])
        np.testing.assert_allclose(m.to_image(m.from_image(xy)), xy, atol=1e-9)
        assert m.image_in_frame(images[0]).shape == (m.size_wh[1], m.size_wh[0], 3)


def test_every_public_name_is_in_dir_and_help_is_short():
    names = set(dir(hhrnet))
    assert set(hhrnet.__all__) | {"HigherHRNet", "TestConfig", "Predictor", "load_model", "evaluate"} <= names
    assert hhrnet.TestConfig is hhrnet.sections.TestConfig
    page = pydoc.render_doc(hhrnet, renderer=pydoc.plaintext)
    assert len(page.splitlines()) < 800 and "Methods inherited from torch.nn" not in page
    for name in hhrnet.__all__:
        assert re.search(rf"\b{name}\b", page), name
    assert "HigherHRNet" in page  # named in the module's text, its nn.Module page left to help(hhrnet.HigherHRNet)


def test_the_lecture_helpers_are_exported():
    assert {"overlay_heatmaps", "plot_predictions", "plot_tag_embedding", "draw_found", "draw_poses",
            "MIN_SCORE"} <= set(viz.__all__)
    assert all(hasattr(viz, name) for name in viz.__all__)


def readme_section(title: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def test_the_readme_python_api_runs_warning_free(tmp_path):
    """Its shell line through the CLI, then its five Python cells in one namespace, as a notebook runs them."""
    section = readme_section("Python API in five cells")
    shell = re.findall(r"```bash\n(.*?)```", section, re.S)
    cells = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(cells) == 5 and len(shell) == 1
    (tmp_path / "experiments").symlink_to(REPO / "experiments")
    matplotlib.use("Agg")
    cwd, namespace = os.getcwd(), {}
    os.chdir(tmp_path)
    try:
        for line in shell[0].strip().splitlines():
            assert line.startswith("python -m hhrnet ") and main(shlex.split(line)[3:]) == 0
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for cell in cells:
                exec(compile(cell, "README.md", "exec"), namespace)
    finally:
        os.chdir(cwd)
        matplotlib.pyplot.close("all")
    assert len(namespace["poses"]) >= 1 and namespace["predictor"].test.flip_test is True
