"""Learning curves of the CPU study's headline network under one lever at a time.

    python experiments/levers.py he he_light_aug         # train (resumably), validate every epoch
    python experiments/levers.py --pretrain recipe_pretrained   # pretrain the w16 backbone first
    python experiments/levers.py --list

Each lever of ``LEVERS`` is a set of config changes on top of ``BEFORE``: the `cpu` profile's headline as
it stood before the levers (official N(0, 0.001) initialisation, the published stem, augmentation and
AE factors, Adam at 2e-3 without warm-up).  ``PROFILE_LEVERS`` change the `cpu` profile's headline as it
stands, on its own data.  A run validates on the validation split at every epoch end and writes
``results/levers/<name>.json`` (the AP curve, the loss at each log step, the isolating diagnostics of
the final network, the configuration and the machine's speed).  Checkpoints go to the study cache.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from hhrnet.config import load_config, to_dict
from hhrnet.engine import read_metrics, train
from hhrnet.io import atomic_write_json
from hhrnet.study import Study, generate_synthetic

HERE = Path(__file__).resolve().parent
# The cpu profile's headline as it stood before the levers: the published initialisation, stem,
# augmentation and AE factors, on the earlier 2000 + 200 scenes of 256 px.
BEFORE = {"train.init": "official", "model.stem_channels": 64, "model.layer1_planes": 64, "model.layer1_blocks": 4,
          "data.max_rotation": 30.0, "data.min_scale": 0.75, "data.max_scale": 1.5,
          "loss.push_loss_factor": [0.001], "loss.pull_loss_factor": [0.001],
          "train.epochs": 12, "train.lr_steps": [10]}
DATA = {"train": 2000, "val": 200, "size": 256, "seed": 0}
HE = {"train.init": "he", "model.stem_channels": 32, "model.layer1_planes": 32, "model.layer1_blocks": 2}
LIGHT = {"data.max_rotation": 10.0, "data.min_scale": 0.85, "data.max_scale": 1.2}
AE = {"loss.push_loss_factor": [0.01], "loss.pull_loss_factor": [0.01]}
LEVERS: dict[str, dict] = {  # each a set of changes on BEFORE; the later ones add up
    "before": {},
    "he": HE,
    "he_lr_5e-4": {**HE, "train.lr": 5e-4, "train.schedule": "mmpose"},
    "he_ae_0.01": {**HE, **AE},
    "he_light_aug": {**HE, **LIGHT},
    "he_light_aug_pretrained": {**HE, **LIGHT, "train.pretrained": "pretrained/cpu_w16.pth"},
    "recipe": {**HE, **LIGHT, **AE},
    "recipe_ae_0.03": {**HE, **LIGHT, "loss.push_loss_factor": [0.03], "loss.pull_loss_factor": [0.03]},
    "recipe_pretrained": {**HE, **LIGHT, **AE, "train.pretrained": "pretrained/cpu_w16.pth"},
    # the recipe's ceiling: ten thousand iterations (the lr step at the same 85% point), NHWC for speed
    "recipe_long": {**HE, **LIGHT, **AE, "train.epochs": 40, "train.lr_steps": [34], "train.channels_last": True},
}
# Levers on the cpu profile as it stands (the recipe above, 4000 + 1000 scenes of 320 px, 2500 iterations),
# trained on the profile's own data and validated on its whole validation split: where the headline's
# remaining AP is (the face and wrist joints, the book's fig-results-joints), measured one at a time.
PROFILE_LEVERS: dict[str, dict] = {
    "cpu_input_192": {"input_size": 192, "train.val_every": 1},  # finer output grid: 96 px at 1/2
    "cpu_long": {"train.epochs": 15, "train.lr_steps": [13], "train.val_every": 2},  # 3x the iterations
}
ALL_LEVERS: dict[str, dict] = {**LEVERS, **PROFILE_LEVERS}


def lever_data(study: Study, name: str | None = None) -> dict:
    """The synthetic set a lever trains on: the cpu profile's own for ``PROFILE_LEVERS``, else the recipe search's."""
    profile = study.data_spec("cpu")["synthetic"]
    return profile if name in PROFILE_LEVERS else {**profile, **DATA}


def lever_config(study: Study, name: str):
    if name in PROFILE_LEVERS:
        return study.training_config("w32_512", "cpu").override(**PROFILE_LEVERS[name])
    syn = lever_data(study)
    cfg = study.training_config("w32_512", "cpu")
    changes = {**BEFORE, **LEVERS[name], "train.val_every": 1, "train.log_every": 25,
               "train.data_root": str(study.cache / "data" / f"levers_{syn['size']}_{syn['train']}_{syn['val']}")}
    if "train.pretrained" in changes:
        changes["train.pretrained"] = str(HERE / changes["train.pretrained"])
    return cfg.override(**changes)


def record(name: str, run_dir: Path, seconds: float | None = None, final: dict | None = None) -> Path:
    """``results/levers/<name>.json`` from a run folder (its ``config.yaml`` and metrics log)."""
    cfg = load_config(str(run_dir / "config.yaml"))
    log = read_metrics(run_dir)
    curve = [{k.removeprefix("val_"): v for k, v in row.items() if k == "iter" or k.startswith("val_")}
             for row in log if "val_AP" in row]
    return atomic_write_json(HERE / "results" / "levers" / f"{name}.json", {
        "lever": name, "changes": ALL_LEVERS[name], "curve": curve, "diagnostics": final,
        "loss": [{k: v for k, v in row.items() if k != "epoch"} for row in log if "total" in row],
        "seconds": seconds, "config": to_dict(cfg)})


def run_lever(study: Study, name: str, diagnose: bool = True) -> Path:
    from hhrnet.diagnostics import diagnostics
    from hhrnet.inference import Predictor

    cfg = lever_config(study, name)
    generate_synthetic(cfg.train.data_root, lever_data(study, name))
    out = study.cache / "levers" / name
    start = time.perf_counter()
    checkpoint = train(cfg, out, resume=(out / "last.pth").exists(), progress=sys.stderr.isatty())
    final = diagnostics(Predictor.from_checkpoint(checkpoint), root=cfg.train.data_root, split="val",
                        backend="auto") if diagnose else None
    return record(name, out, time.perf_counter() - start, final)


def pretrain_backbone(study: Study) -> Path:
    """``pretrained/cpu_w16.pth``: limb segmentation (``hhrnet.pretrain``) on 4000 scenes of seed 1000."""
    from hhrnet.pretrain import pretrain, save_backbone

    syn = {**lever_data(study), "train": 4000, "val": 20, "seed": 1000}
    root = study.cache / "data" / "pretrain_256_4000_seed1000"
    generate_synthetic(root, syn)
    cfg = study.training_config("w32_512", "cpu").override(**{
        **BEFORE, **HE, "train.data_root": str(root), "train.log_every": 25, "train.epochs": 6, "train.lr_steps": [5],
        "train.lr": 1e-3, "train.schedule": "mmpose"})
    skeleton = cfg.data.keypoint_set.skeleton
    out = study.cache / "pretrain" / "cpu_w16"
    checkpoint = pretrain(cfg, out, skeleton, resume=(out / "last.pth").exists(), progress=sys.stderr.isatty())
    return save_backbone(checkpoint, HERE / "pretrained" / "cpu_w16.pth")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("levers", nargs="*")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--no-diagnostics", action="store_true", help="skip the final isolating diagnostics")
    parser.add_argument("--pretrain", action="store_true", help="(re)make pretrained/cpu_w16.pth first")
    parser.add_argument("--record", metavar="RUN_DIR", help="write the lever's JSON from an existing run folder")
    args = parser.parse_args(argv)
    study = Study.load(HERE)
    if args.record:
        print(record(args.levers[0], Path(args.record)))
        return 0
    if args.pretrain:
        print(pretrain_backbone(study))
    if args.list or not args.levers:
        for name, changes in ALL_LEVERS.items():
            print(f"{name:16s} {json.dumps(changes)}")
        return 0
    unknown = [n for n in args.levers if n not in ALL_LEVERS]
    if unknown:
        print(f"levers: unknown lever(s) {', '.join(unknown)}; see --list", file=sys.stderr)
        return 2
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    for name in args.levers:
        print(run_lever(study, name, diagnose=not args.no_diagnostics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
