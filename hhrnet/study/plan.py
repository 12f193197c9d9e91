"""From the study definition to configurations and runs: ``Study`` (a checked ``rows.yaml`` and its folder)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from ..config import Config, preset, to_dict
from ..sections import ConfigError
from .errors import StudyError
from .spec import (CocoData, EvaluationSpec, LeverSpec, ProfileSpec, StudySpec, TrainingSpec, checkpoint_preset,
                   load_spec, merged_data)


@dataclass(frozen=True)
class Run:
    """One notebook execution: a training or an evaluation, for one seed."""

    name: str                     # e.g. "train/w32_512/seed0" or "eval/w32_512_ms/seed0"
    kind: str                     # "train" | "evaluate"
    parameters: dict[str, Any]    # papermill parameters (plain values only)
    needs: tuple[str, ...] = ()   # runs whose checkpoint this one reads
    training: str | None = None   # the study training it trains or evaluates (None: published weights)
    seed: int = 0
    inputs: tuple[str, ...] = ()  # files of the experiments folder it reads (a trunk): their bytes are stamped

    @property
    def notebook(self) -> str:
        return f"{self.kind}.ipynb"


class Study:
    """``rows.yaml`` read and checked (``definition``), with the experiments folder it lives in."""

    def __init__(self, root: Path, definition: StudySpec) -> None:
        self.root, self.definition = root, definition
        self.cache = Path(os.environ.get("HHRNET_CACHE", root / "cache"))

    @classmethod
    def load(cls, experiments_dir: str | Path = "experiments") -> "Study":
        root = Path(experiments_dir).resolve()
        return cls(root, load_spec(root / "rows.yaml"))

    @property
    def spec(self) -> dict[str, Any]:
        """The parsed YAML, as the book reads it (``spec["families"][name]["title"]``)."""
        return self.definition.raw  # type: ignore[return-value]

    def profile_spec(self, name: str) -> ProfileSpec:
        if name not in self.definition.profiles:
            raise StudyError(f"unknown profile {name!r}; choose one of {', '.join(self.definition.profiles)}")
        return self.definition.profiles[name]

    def profile(self, name: str) -> dict[str, Any]:
        self.profile_spec(name)
        return self.spec["profiles"][name]

    def results_dir(self, profile: str) -> Path:
        return self.root / "results" / profile

    def trainings(self, profile: str) -> dict[str, TrainingSpec]:
        """The trainings of a profile: its ``trainings:`` list if it has one, less those whose ``profiles:``
        leave it out."""
        only = self.profile_spec(profile).trainings
        return {n: t for n, t in self.definition.trainings.items()
                if (t.profiles is None or profile in t.profiles) and (only is None or n in only)}

    def evaluations(self, profile: str) -> dict[str, EvaluationSpec]:
        trainings = self.trainings(profile)
        return {n: e for n, e in self.definition.evaluations.items()
                if e.runs_in(profile) and (e.training is None or e.training in trainings)}

    # ----------------------------------------------------------------------------------------------
    # From rows.yaml to configurations

    def training_config(self, training: str, profile: str, seed: int = 0) -> Config:
        """The configuration of a training in a profile: preset → row changes → profile scaling (with the
        backbone of the preset's width, where the profile names them) → the row's changes for this
        profile (``profile_changes``); the data is the profile's with the row's over it."""
        if training not in self.definition.trainings:
            raise StudyError(f"unknown training {training!r}")
        spec, prof = self.definition.trainings[training], self.profile_spec(profile)
        base = preset(spec.preset)
        cfg = base.override(**spec.changes)
        width = max(1, round(base.model.width * prof.width))
        size = self.input_size(cfg.input_size, profile)
        scaled = {"name": f"{training}@{profile}", "model.width": width, "input_size": size,
                  "train.seed": seed, **self._backbone(base.model.width, profile), **prof.changes,
                  **spec.profile_changes.get(profile, {}), **self._data_overrides(profile, training)}
        try:
            return cfg.override(**scaled)
        except ConfigError as err:
            raise StudyError(f"training {training!r} in profile {profile!r}: {err}") from None

    def evaluation_config(self, evaluation: str, profile: str, seed: int = 0) -> Config:
        if evaluation not in self.definition.evaluations:
            raise StudyError(f"unknown evaluation {evaluation!r}")
        ev = self.definition.evaluations[evaluation]
        try:
            if ev.training is not None:
                return self.training_config(ev.training, profile, seed).override(**ev.test)
            # published weights: the full-size preset, the profile's data, the evaluation's test settings
            return preset(checkpoint_preset(ev)).override(name=evaluation, **self._data_overrides(profile), **ev.test)
        except ConfigError as err:
            raise StudyError(f"evaluation {evaluation!r} in profile {profile!r}: {err}") from None

    def lever(self, name: str) -> LeverSpec:
        if name not in self.definition.levers:
            raise StudyError(f"unknown lever {name!r}; choose one of {', '.join(self.definition.levers)}")
        return self.definition.levers[name]

    def lever_config(self, name: str) -> Config:
        """A lever's configuration: its training in its profile, then ``base`` and ``changes``, on its data
        (a ``train.pretrained`` path is relative to the experiments folder)."""
        lever = self.lever(name)
        changes = {**lever.base, **lever.changes}
        if changes.get("train.pretrained"):
            changes["train.pretrained"] = str(self.root / changes["train.pretrained"])
        data = self.lever_data_spec(name)
        changes.update({f"train.{k}": data[k] for k in ("data_root", "train_split", "val_split")})
        try:
            return self.training_config(lever.training, lever.profile).override(**changes)
        except ConfigError as err:
            raise StudyError(f"lever {name!r}: {err}") from None

    def lever_data_spec(self, name: str) -> dict[str, Any]:
        """The data a lever trains on: its profile's, with the lever's ``data`` over it."""
        lever = self.lever(name)
        return self._data_of(self.profile_spec(lever.profile), lever)

    def _backbone(self, preset_width: int, profile: str) -> dict[str, Any]:
        """``train.pretrained`` by the profile's ``backbones`` rule (nothing where it has none); a trunk file is
        relative to the experiments folder."""
        backbones = self.profile_spec(profile).backbones
        if not backbones:
            return {}
        if preset_width not in backbones:
            raise StudyError(f"profile {profile!r}: backbones has no backbone for width {preset_width}")
        backbone = backbones[preset_width]
        return {"train.pretrained": str(self.root / backbone) if backbone.endswith(".pth") else backbone}

    def trunk_inputs(self, cfg: Config) -> tuple[str, ...]:
        """The trunk file a training starts from (``train.pretrained`` inside the experiments folder), if any."""
        pretrained = cfg.train.pretrained
        return (pretrained,) if pretrained and Path(pretrained).is_relative_to(self.root) else ()

    def trunk_lever(self, path: str) -> str:
        """The lever whose ``trunk`` (or ``pretrain``) writes ``path``."""
        rel = Path(path).relative_to(self.root).as_posix()
        return next((n for n, lv in self.definition.levers.items() if rel in (lv.trunk, lv.pretrain)), "?")

    def input_size(self, published: int, profile: str) -> int:
        """A published input size in a profile: its ``input_sizes`` entry, or the size itself."""
        sizes = self.profile_spec(profile).input_sizes
        if sizes is None:
            return published
        if published not in sizes:
            raise StudyError(f"profile {profile!r}: input_sizes has no entry for the published size {published}")
        return sizes[published]

    def _data_overrides(self, profile: str, training: str | None = None) -> dict[str, Any]:
        data = self.data_spec(profile, training)
        return {f"train.{k}": data[k] for k in ("data_root", "train_split", "val_split")}

    def data_spec(self, profile: str, training: str | None = None) -> dict[str, Any]:
        """Where a training's data lives in a profile (the profile's, with the training's ``data:`` over
        it): the synthetic set (generated on demand) or a COCO-format dataset at a path.

        A synthetic set of another keypoint set than COCO's has its own folder (``..._<keypoints>``)."""
        return self._data_of(self.profile_spec(profile), self.definition.trainings.get(training or ""))

    def _data_of(self, profile: ProfileSpec, entry: TrainingSpec | LeverSpec | None) -> dict[str, Any]:
        data = merged_data(profile, entry)
        if isinstance(data, CocoData):
            return {"data_root": data.root, "train_split": data.train_split, "val_split": data.val_split}
        syn = {k: v for k, v in asdict(data).items() if (k != "scene" or v) and (k != "keypoints" or v is not None)}
        knobs = {**data.scene, **({"keypoints": data.keypoints} if data.keypoints is not None else {})}
        scene = hashlib.sha1(json.dumps(knobs, sort_keys=True).encode()).hexdigest()[:8]
        name = f"synthetic_{data.size}_{data.train}_{data.val}_seed{data.seed}_{scene}"
        root = self.cache / "data" / (name if data.keypoints is None else f"{name}_{data.keypoints}")
        return {"data_root": str(root), "train_split": "train", "val_split": "val", "synthetic": syn}

    def data_specs(self, profile: str, runs: "list[Run] | None" = None) -> list[dict[str, Any]]:
        """The distinct data of ``runs`` (default: every run of the profile), in order of first use."""
        specs: dict[str, dict[str, Any]] = {}
        for run in self.runs(profile) if runs is None else runs:
            spec = self.data_spec(profile, run.training)
            specs.setdefault(spec["data_root"], spec)
        return list(specs.values())

    def seeds_for(self, training: str, profile: str) -> list[int]:
        """Every training of a profile runs with all its seeds, so each family compares like with like."""
        return list(self.profile_spec(profile).seeds)

    def eval_seeds(self, evaluation: str, profile: str) -> list[int]:
        ev = self.definition.evaluations[evaluation]
        return self.seeds_for(ev.training, profile) if ev.training else [self.profile_spec(profile).seeds[0]]

    def checkpoint_dir(self, training: str, profile: str, seed: int) -> Path:
        return self.cache / "runs" / profile / training / f"seed{seed}"

    def resolve_checkpoint(self, checkpoint: str) -> str:
        """A ``checkpoint:`` entry: a path (relative to the experiments folder) or a published name."""
        path = Path(checkpoint).expanduser()
        if not path.is_absolute() and (self.root / path).exists():
            return str(self.root / path)
        return str(path) if path.exists() else checkpoint  # a name: hhrnet.checkpoints resolves it

    def runs(self, profile: str) -> list[Run]:
        """Every run of a profile in the order the driver runs them: seed by seed (every row's first seed
        before any second one), each training followed by its evaluations, so an interrupted study has
        whole rows; evaluations of published weights last."""
        trainings, evaluations = [], []
        for name, training in self.trainings(profile).items():
            synthetic = json.dumps(self.data_spec(profile, name).get("synthetic"))
            seeds = self.seeds_for(name, profile)
            for seed in seeds:
                cfg = self.training_config(name, profile, seed)
                parameters = {"config_yaml": yaml.safe_dump(to_dict(cfg), sort_keys=False),
                              "checkpoint_dir": str(self.checkpoint_dir(name, profile, seed)),
                              "synthetic_json": synthetic}
                if training.keep_weights and seed == seeds[0]:
                    parameters["keep_weights"] = True
                trainings.append(Run(f"train/{name}/seed{seed}", "train", parameters, training=name, seed=seed,
                                     inputs=self.trunk_inputs(cfg)))
        for name, ev in self.evaluations(profile).items():
            for seed in self.eval_seeds(name, profile):
                cfg = self.evaluation_config(name, profile, seed)
                if ev.training is not None:
                    checkpoint = str(self.checkpoint_dir(ev.training, profile, seed) / "last.pth")
                    metrics = str(self.results_dir(profile) / "train" / ev.training / f"seed{seed}" / "metrics.json")
                    needs: tuple[str, ...] = (f"train/{ev.training}/seed{seed}",)
                else:
                    checkpoint, metrics, needs = self.resolve_checkpoint(ev.checkpoint or ""), "", ()
                parameters = {"config_yaml": yaml.safe_dump(to_dict(cfg), sort_keys=False),
                              "checkpoint": checkpoint, "training_metrics": metrics, "evaluation": name}
                if ev.checkpoint is not None:
                    parameters["published"] = True
                if ev.diagnostics:  # only where set: the stamps of the other evaluations stay as they were
                    parameters["diagnostics"] = True
                evaluations.append(Run(f"eval/{name}/seed{seed}", "evaluate", parameters, needs=needs,
                                       training=ev.training, seed=seed))
        position = {seed: i for i, seed in enumerate(self.profile_spec(profile).seeds)}
        ordered = []
        for run in sorted(trainings, key=lambda r: position.get(r.seed, 0)):
            ordered += [run, *(e for e in evaluations if e.needs == (run.name,))]
        return ordered + [e for e in evaluations if not e.needs]
