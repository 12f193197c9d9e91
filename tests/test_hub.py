"""Published weights by name, without the internet: a loopback HTTP server stands in for the model zoo.

The served file is a W32 checkpoint in mmpose's container and key layout, built from the golden
manifest of the published file (int8 values keep it at 29 MB); the registry entries keep their
real names and file names and only their URL and hash prefix point at the loopback copy.
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
import yaml

from conftest import COCO_MINI, REPO, golden_files
from hhrnet import hub
from hhrnet.checkpoints import (BACKBONE_PREFIXES, CheckpointError, load_model, load_pretrained_backbone,
                                read_checkpoint, resolve_config, save_checkpoint)
from hhrnet.cli import main as cli_main
from hhrnet.config import Config, preset
from hhrnet.model import HigherHRNet
from hhrnet.sections import ModelConfig


class Loopback:
    """Files served at http://127.0.0.1:PORT/NAME; every GET is counted; `truncate` names are cut mid-body."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.truncate: set[str] = set()
        loopback = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                name = self.path.lstrip("/")
                loopback.requests.append(name)
                if name not in loopback.files:
                    self.send_error(404)
                    return
                body = loopback.files[name]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if name in loopback.truncate:
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True  # the server drops the connection after half the body
                else:
                    self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def serve(self, name: str, body: bytes) -> str:
        self.files[name] = body
        return f"{self.base}/{name}"


@pytest.fixture
def server():
    loopback = Loopback()
    loopback.thread.start()
    yield loopback
    loopback.server.shutdown()
    loopback.server.server_close()
    loopback.thread.join(timeout=5)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty weights cache for this test only."""
    folder = tmp_path / "weights"
    monkeypatch.setenv("HHRNET_WEIGHTS", str(folder))
    monkeypatch.delenv("HHRNET_WEIGHTS_MIRROR", raising=False)
    return folder


@pytest.fixture(scope="module")
def published():
    """(file bytes, sha256 hex, {mmpose key: tensor}, manifest rows) of an mmpose-layout W32 checkpoint."""
    rows = json.loads(golden_files("mmpose_keys_w32.json")[0].read_text())["keys"]
    gen = torch.Generator().manual_seed(0)
    state = {key: torch.zeros(shape, dtype=torch.int64) if key.endswith("num_batches_tracked")
             else torch.randint(-100, 100, shape, dtype=torch.int8, generator=gen) for key, shape, _ in rows}
    buffer = io.BytesIO()
    torch.save({"meta": {"epoch": 300, "mmpose_version": "0.x"}, "state_dict": state}, buffer)
    body = buffer.getvalue()
    return body, hashlib.sha256(body).hexdigest(), state, rows


def point_at(monkeypatch, server, name: str, body: bytes) -> hub.Weights:
    """Serve `body` under the entry's own file name and register its URL and sha256 prefix."""
    entry = replace(hub.REGISTRY[name], url=server.serve(hub.REGISTRY[name].filename, body),
                    sha256=hashlib.sha256(body).hexdigest()[:8])
    monkeypatch.setitem(hub.REGISTRY, name, entry)
    return entry


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_registry_entries_are_complete():
    for name, w in hub.REGISTRY.items():
        assert w.name == name and w.layout in ("mmpose", "official", "imagenet-hrnet") and w.source
        assert (w.url is None) == (w.manual is not None), name  # a direct URL, or where to get it by hand
        if w.url:
            assert w.url.endswith("/" + w.filename) and w.url.startswith("https://download.openmmlab.com/mmpose/")
            assert len(w.sha256) == 8 and w.sha256 in w.filename  # the published names carry the prefix
        if w.preset:
            assert preset(w.preset).model.width == w.width
    assert {n: w.preset for n, w in hub.REGISTRY.items() if w.layout == "mmpose"} == \
        {"w32_512": "w32_512", "w32_640": "w32_640", "w48_512": "w48_512"}
    assert hub.REGISTRY["w32_512"].sha256 == "8ae85183" and hub.REGISTRY["hrnet_w48_imagenet"].sha256 == "8ef0771d"


def test_cli_help_names_every_published_network():
    from hhrnet.cli import CHECKPOINT_HELP

    assert all(name in CHECKPOINT_HELP for name, w in hub.REGISTRY.items() if not w.is_backbone)


def test_weights_dir_environment(monkeypatch, tmp_path):
    for var in ("HHRNET_WEIGHTS", "HHRNET_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert hub.weights_dir() == tmp_path / ".cache" / "hhrnet" / "weights"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.weights_dir() == tmp_path / "xdg" / "hhrnet" / "weights"
    monkeypatch.setenv("HHRNET_CACHE", str(tmp_path / "study"))  # the study's cache: a subfolder of it
    assert hub.weights_dir() == tmp_path / "study" / "weights"
    monkeypatch.setenv("HHRNET_WEIGHTS", str(tmp_path / "w"))
    assert hub.weights_dir() == tmp_path / "w"


def test_download_verify_convert_load_strictly_then_cached(server, cache, published, monkeypatch):
    body, digest, state, rows = published
    entry = point_at(monkeypatch, server, "w32_512", body)

    model, cfg = load_model("w32_512")
    assert server.requests == [entry.filename]
    assert cfg.name == "w32_512" and cfg.input_size == 512 and cfg.model == preset("w32_512").model
    assert sorted(p.name for p in cache.iterdir()) == [entry.filename]  # no temporary file left
    assert hub.sha256_of(cache / entry.filename) == digest
    loaded = model.state_dict()
    assert list(loaded) == [official for _, _, official in rows]  # prefixes stripped, same order
    for key, _, official in rows[:: len(rows) // 40]:
        assert torch.equal(loaded[official], state[key].to(loaded[official].dtype))

    assert hub.fetch("w32_512") == cache / entry.filename  # second use: the cached, re-hashed file
    state2, embedded = read_checkpoint("w32_512")
    assert server.requests == [entry.filename] and embedded is None and len(state2) == len(rows)


def test_preset_of_the_entry_sets_the_input_size(server, cache, published, monkeypatch):
    point_at(monkeypatch, server, "w32_640", published[0])
    _, cfg, _ = resolve_config("w32_640")  # the tensors of 512 and 640 are alike; the entry decides
    assert cfg.name == "w32_640" and cfg.input_size == 640
    _, cfg, _ = resolve_config("w32_640", "w32_512")  # an explicit config still wins
    assert cfg.input_size == 512


def test_wrong_hash_is_refused_and_nothing_is_kept(server, cache, published, monkeypatch):
    body, digest = published[:2]
    entry = hub.REGISTRY["w32_512"]  # the real entry, its file name served by a mirror
    server.serve(entry.filename, body)
    monkeypatch.setenv("HHRNET_WEIGHTS_MIRROR", server.base + "/")
    with pytest.raises(hub.WeightsError) as err:
        load_model("w32_512")
    message = str(err.value)
    assert "8ae85183" in message and digest[:8] in message and "refused" in message and "\n" not in message
    assert server.requests == [entry.filename]
    assert not cache.exists() or not any(cache.iterdir())


def test_interrupted_download_leaves_nothing(server, cache, published, monkeypatch):
    entry = point_at(monkeypatch, server, "w32_512", published[0])
    server.truncate.add(entry.filename)
    with pytest.raises(hub.WeightsError, match="stopped after .* of .* bytes"):
        hub.fetch("w32_512")
    assert server.requests == [entry.filename]
    assert not any(cache.iterdir())

    del server.files[entry.filename]  # gone from the server: HTTP 404, one line, nothing kept
    with pytest.raises(hub.WeightsError, match=f"cannot download {entry.url} .*Not Found.* put it at {cache}"):
        hub.fetch("w32_512")
    assert not any(cache.iterdir())


def test_no_network_says_what_to_download_and_where(cache, published, monkeypatch):
    url = f"http://127.0.0.1:{closed_port()}/{hub.REGISTRY['w48_512'].filename}"
    monkeypatch.setitem(hub.REGISTRY, "w48_512", replace(hub.REGISTRY["w48_512"], url=url))
    dest = cache / hub.REGISTRY["w48_512"].filename
    with pytest.raises(hub.WeightsError) as err:
        load_model("w48_512")
    message = str(err.value)
    assert url in message and str(dest) in message and "\n" not in message
    assert not any(cache.iterdir())

    cli_error = io.StringIO()  # the CLI prints the same single line and exits 1
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("sys.stderr", cli_error)
        assert cli_main(["export", "--checkpoint", "w48_512", "--onnx", str(cache / "x.onnx")]) == 1
    assert cli_error.getvalue().count("\n") == 1 and url in cli_error.getvalue()


def test_a_file_put_in_the_cache_by_hand_is_used_and_checked(cache, published, monkeypatch, tmp_path):
    body, digest = published[:2]
    url = f"http://127.0.0.1:{closed_port()}/offline.pth"  # any request would fail
    monkeypatch.setitem(hub.REGISTRY, "w32_512", replace(hub.REGISTRY["w32_512"], url=url, sha256=digest[:8]))
    dest = cache / hub.REGISTRY["w32_512"].filename
    cache.mkdir()
    dest.write_bytes(body)
    assert hub.fetch("w32_512") == dest

    dest.write_bytes(body[:1000] + bytes([body[1000] ^ 1]) + body[1001:])  # one bit off: refused, not deleted
    with pytest.raises(hub.WeightsError, match=f"expected {digest[:8]}: refused; delete {dest}"):
        read_checkpoint("w32_512")
    assert dest.exists()

    local = tmp_path / "w32_512.pth"  # a local path always works, whatever its name
    local.write_bytes(body)
    state, _ = read_checkpoint(local)
    assert len(state) == len(published[3])


def test_manual_entry_says_where_to_get_it_then_loads(cache, published, monkeypatch):
    entry = hub.REGISTRY["official_w32_640"]
    with pytest.raises(hub.WeightsError) as err:
        load_model("official_w32_640")
    assert "drive.google.com" in str(err.value) and str(cache / entry.filename) in str(err.value)

    _, _, state, rows = published  # the official layout: a bare state dict with official key names
    cache.mkdir()
    torch.save({official: state[key] for key, _, official in rows}, cache / entry.filename)
    _, cfg, _ = resolve_config("official_w32_640")
    assert cfg.name == "w32_640" and cfg.input_size == 640


def test_unknown_name_lists_the_known_ones(cache):
    with pytest.raises(CheckpointError, match="no such checkpoint file, nor a published name .*w32_512.*hrnet_w48_imagenet"):
        load_model("w32_513")


def test_imagenet_backbone_by_name_for_train_pretrained(server, cache, published, monkeypatch):
    _, _, state, rows = published
    backbone = {official: state[key] for key, _, official in rows if official.startswith(BACKBONE_PREFIXES)}
    extra = {"incre_modules.0.0.conv1.weight": torch.zeros(32, 32, 1, 1),  # ImageNet-only modules: skipped
             "stage4.2.fuse_layers.1.0.0.0.weight": torch.zeros(64, 32, 3, 3),
             "classifier.weight": torch.zeros(1000, 2048)}
    buffer = io.BytesIO()
    torch.save({**backbone, **extra}, buffer)
    entry = point_at(monkeypatch, server, "hrnet_w32_imagenet", buffer.getvalue())

    with pytest.raises(CheckpointError, match="backbone, not a pose network"):
        load_model("hrnet_w32_imagenet")
    assert server.requests == []  # refused before downloading

    model = HigherHRNet(preset("w32_512").model)
    loaded, left = load_pretrained_backbone(model, "hrnet_w32_imagenet")  # what train.pretrained does
    assert (loaded, left) == (len(backbone), 0) and server.requests == [entry.filename]
    assert torch.equal(model.state_dict()["stage4.2.branches.3.3.bn2.running_var"],
                       backbone["stage4.2.branches.3.3.bn2.running_var"].float())


def test_cli_commands_accept_a_name(server, cache, monkeypatch, tmp_path):
    # predict, convert, export and evaluate resolve a name alike; a small network keeps this fast
    tiny = Config(name="tiny", input_size=128, model=ModelConfig(width=8, stage_modules=(1, 1, 1),
                                                                 blocks_per_branch=1, num_basic_blocks=1))
    save_checkpoint(tmp_path / "tiny.pth", HigherHRNet(tiny.model), tiny)
    body = (tmp_path / "tiny.pth").read_bytes()
    monkeypatch.setitem(hub.REGISTRY, "tiny_test", replace(hub.REGISTRY["w32_512"], name="tiny_test",
                                                            filename="tiny.pth", preset=None))
    point_at(monkeypatch, server, "tiny_test", body)
    image = sorted((COCO_MINI / "images").glob("*.jpg"))[0]
    assert cli_main(["predict", str(image), "--out", str(tmp_path / "pred"), "--checkpoint", "tiny_test",
                     "--no-progress", "--no-flip"]) == 0
    assert isinstance(json.loads((tmp_path / "pred" / "predictions.json").read_text()), list)  # COCO results
    assert (tmp_path / "pred" / image.name).is_file()  # the drawn image, under the input's name
    assert server.requests == ["tiny.pth"] and (cache / "tiny.pth").is_file()

    # the other commands that take a checkpoint read the cached file: no second request
    assert cli_main(["convert", "tiny_test", str(tmp_path / "converted.pth")]) == 0
    assert read_checkpoint(tmp_path / "converted.pth")[1]["name"] == "tiny"
    assert cli_main(["export", "--checkpoint", "tiny_test", "--onnx", str(tmp_path / "tiny.onnx")]) == 0
    assert (tmp_path / "tiny.onnx").stat().st_size > 0
    annotations = json.loads((COCO_MINI / "person_keypoints_val2017.json").read_text())
    few = {**annotations, "images": annotations["images"][:2]}  # two images keep the evaluation short
    few["annotations"] = [a for a in annotations["annotations"] if a["image_id"] in {i["id"] for i in few["images"]}]
    (tmp_path / "few.json").write_text(json.dumps(few))
    assert cli_main(["evaluate", "--checkpoint", "tiny_test", "--images", str(COCO_MINI / "images"),
                     "--annotations", str(tmp_path / "few.json"), "--out", str(tmp_path / "eval"),
                     "--no-progress", "--no-flip"]) == 0
    assert server.requests == ["tiny.pth"]


def test_top_level_load_model_resolves_a_name(server, cache, published, monkeypatch):
    import hhrnet

    entry = point_at(monkeypatch, server, "w32_512", published[0])
    model, cfg = hhrnet.load_model("w32_512")  # the package's own API, as the README shows it
    assert cfg.name == "w32_512" and not model.training
    assert server.requests == [entry.filename] and (cache / entry.filename).is_file()


def test_study_plans_the_published_rows_without_training():
    """`python -m hhrnet study --profile paper --only published` selects the six evaluations and no training."""
    from hhrnet.study.plan import Study
    from hhrnet.study.runner import select_runs

    study = Study.load(REPO / "experiments")
    runs = select_runs(study.runs("paper"), ["published"])
    assert sorted(r.name for r in runs) == sorted(f"eval/published_{w}_{t}/seed0" for w in ("w32_512", "w32_640", "w48_512")
                                                  for t in ("ss", "ms"))
    for run in runs:
        assert run.needs == () and run.parameters["published"] is True
        assert hub.get(run.parameters["checkpoint"]).layout == "mmpose"
    assert not select_runs(study.runs("cpu"), ["published"])


def test_study_rows_of_the_published_checkpoints():
    """Every `checkpoint:` evaluation names a registry entry and the published row it should reproduce."""
    fragment = REPO / "experiments" / "published_rows.yaml"  # until merged into rows.yaml
    rows = yaml.safe_load((REPO / "experiments" / "rows.yaml").read_text())
    spec = yaml.safe_load(fragment.read_text()) if fragment.exists() else rows
    evaluations = {n: e for n, e in spec["evaluations"].items() if "checkpoint" in e}
    published = {r["evaluation"]: r for r in rows["published"]["mmpose"]["rows"]}
    assert sorted(evaluations) == sorted(f"published_{w}_{t}" for w in ("w32_512", "w32_640", "w48_512")
                                         for t in ("ss", "ms"))
    for name, ev in evaluations.items():
        entry = hub.get(ev["checkpoint"])
        assert entry.layout == "mmpose" and ev["profiles"] == ["paper"]
        row = name.removeprefix("published_")
        assert ev["published"]["mmpose"] == row and row in published
        assert name.startswith(f"published_{entry.preset}_")
        assert ev["test"] == {"test.flip_test": True,
                              "test.scales": [2.0, 1.0, 0.5] if name.endswith("_ms") else [1.0]}
    family = spec["families"]["published_weights"]
    assert sorted(family["evaluations"]) == sorted(evaluations)
