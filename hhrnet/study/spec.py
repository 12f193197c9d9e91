"""``experiments/rows.yaml`` as typed dataclasses, checked when it is read.

Every problem is one ``SpecError`` naming the file, the entry and the key: YAML syntax errors with
their line and column, unknown keys, wrong types, references to missing trainings, evaluations or
profiles, and config changes that ``hhrnet.config`` refuses.  Each section is parsed from a table of
its keys (a ``Schema`` of ``hhrnet.study.schema``), so a new key (a profile's ``pretrain:``, say) is one
table line and one field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ..config import preset
from ..hub import REGISTRY
from ..io import load_yaml
from ..sections import ConfigError
from .claims import Expectation
from .errors import SpecError
from .schema import (Schema, backbones, boolean, changes_by_profile, entry_fields, integer, keypoint_set_name, list_of,
                     mapping, number, preset_name, sizes, string)

SECTIONS = ("published", "trainings", "evaluations", "families", "profiles")


@dataclass(frozen=True)
class TrainingData:
    """A training's own data, over its profile's: ``synthetic`` keys merged over a synthetic profile's
    (``keypoints: crowdpose`` for CrowdPose-format crowds), ``real`` replacing a real-data profile's
    (``coco:`` or ``crowdpose:`` in rows.yaml: a root and its splits)."""

    synthetic: Mapping[str, Any] = field(default_factory=dict)
    real: "CocoData | None" = None


@dataclass(frozen=True)
class TrainingSpec:
    """One network: a preset plus dotted config changes, optionally only in some profiles.

    ``profile_changes`` are further changes in one profile only (the ImageNet backbone of the paper
    profile, say); ``data`` replaces parts of the profile's data for this training.
    """

    name: str
    preset: str
    changes: Mapping[str, Any] = field(default_factory=dict)
    profiles: tuple[str, ...] | None = None  # None: every profile
    profile_changes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    data: TrainingData = field(default_factory=TrainingData)
    keep_weights: bool = False  # seed 0's weights (fp16) are kept with the results, for the book and `predict`


@dataclass(frozen=True)
class EvaluationSpec:
    """One COCO AP measurement: of a study training, or of a checkpoint (a file or a published name)."""

    name: str
    training: str | None = None
    checkpoint: str | None = None
    preset: str | None = None  # config of a ``checkpoint`` evaluation; default: the published name's preset
    test: Mapping[str, Any] = field(default_factory=dict)
    profiles: tuple[str, ...] | None = None
    published: Mapping[str, str] = field(default_factory=dict)  # source in ``published`` -> row it reproduces
    diagnostics: bool = False  # also run ``hhrnet.diagnostics`` (a second pass over the split, with ground-truth maps)

    def runs_in(self, profile: str) -> bool:
        return self.profiles is None or profile in self.profiles


@dataclass(frozen=True)
class FamilySpec:
    """The evaluations of one ablation and the comparisons its claim implies (the words are in the book)."""

    name: str
    title: str
    evaluations: tuple[str, ...]
    expect: tuple[Expectation, ...] = ()
    compare_published: Mapping[str, Any] = field(default_factory=dict)  # e.g. {source: mmpose, tolerance_AP: 0.001}


@dataclass(frozen=True)
class SyntheticData:
    train: int
    val: int
    size: int
    seed: int
    scene: Mapping[str, Any] = field(default_factory=dict)
    keypoints: str | None = None  # None: COCO's 17 joints; ``crowdpose`` also writes each image's crowdIndex


@dataclass(frozen=True)
class CocoData:
    root: str
    train_split: str
    val_split: str


@dataclass(frozen=True)
class ProfileSpec:
    """How a profile scales every training: a width factor, input sizes, changes, data, seeds.

    ``input_sizes`` maps each published input size to the profile's (multiples of ``TEST_SIZE_MULTIPLE``,
    the sizes the test resize keeps); without it the published sizes are used.  Every training runs once per seed;
    ``trainings`` narrows a profile to some trainings (a short profile that still shows learning).
    """

    name: str
    width: float
    data: SyntheticData | CocoData
    seeds: tuple[int, ...]
    changes: Mapping[str, Any] = field(default_factory=dict)
    input_sizes: Mapping[int, int] | None = None
    trainings: tuple[str, ...] | None = None  # None: every training (that ``profiles:`` does not restrict)
    backbones: Mapping[int, str] = field(default_factory=dict)  # preset width -> train.pretrained (name or trunk)


@dataclass(frozen=True)
class LeverSpec:
    """One lever: a study training in one profile with ``base`` then ``changes`` on top, on the profile's
    data with ``data`` merged over it; with ``pretrain``, a backbone pretraining written to that path; with
    ``trunk``, the trained network is also written there (fp16), for a profile's ``backbones`` to start from."""

    name: str
    training: str = "w32_512"
    profile: str = "cpu"
    base: Mapping[str, Any] = field(default_factory=dict)
    changes: Mapping[str, Any] = field(default_factory=dict)
    data: TrainingData = field(default_factory=TrainingData)
    pretrain: str | None = None
    trunk: str | None = None


@dataclass(frozen=True)
class PublishedSource:
    name: str
    source: str
    url: str
    rows: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True)
class StudySpec:
    """The whole study definition; ``raw`` is the parsed YAML (what the book reads as ``study.spec``)."""

    path: Path
    trainings: Mapping[str, TrainingSpec]
    evaluations: Mapping[str, EvaluationSpec]
    families: Mapping[str, FamilySpec]
    profiles: Mapping[str, ProfileSpec]
    published: Mapping[str, PublishedSource]
    raw: Mapping[str, Any]
    levers: Mapping[str, LeverSpec] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# The keys of each kind of entry, with their checkers (``hhrnet.study.schema``) and whether they are required


TRAINING: Schema = {"preset": (preset_name, True), "changes": (mapping, False), "profiles": (list_of(string), False),
                    "profile_changes": (changes_by_profile, False), "data": (lambda v: v, False),
                    "keep_weights": (boolean, False)}
EVALUATION: Schema = {"training": (string, False), "checkpoint": (string, False), "preset": (preset_name, False),
                      "test": (mapping, False), "profiles": (list_of(string), False), "published": (mapping, False),
                      "diagnostics": (boolean, False)}
FAMILY: Schema = {"title": (string, True), "evaluations": (list_of(string), True), "expect": (list_of(string), False),
                  "compare_published": (mapping, False)}
PROFILE: Schema = {"width": (number, True), "input_sizes": (sizes, False), "changes": (mapping, False),
                   "data": (lambda v: v, True), "seeds": (list_of(integer), True),
                   "trainings": (list_of(string), False), "backbones": (backbones, False)}
SYNTHETIC: Schema = {"train": (integer, True), "val": (integer, True), "size": (integer, True),
                     "seed": (integer, True), "scene": (mapping, False), "keypoints": (keypoint_set_name, False)}
COCO: Schema = {"root": (string, True), "train_split": (string, True), "val_split": (string, True)}
TRAINING_DATA: Schema = {"synthetic": (lambda v: v, False), "coco": (lambda v: v, False), "crowdpose": (lambda v: v, False)}
LEVER: Schema = {"training": (string, False), "profile": (string, False), "base": (mapping, False),
                 "changes": (mapping, True), "data": (lambda v: v, False), "pretrain": (string, False),
                 "trunk": (string, False)}
PUBLISHED: Schema = {"source": (string, True), "url": (string, True), "rows": (list_of(mapping), True)}


# --------------------------------------------------------------------------------------------------
# Reading


def read_yaml(path: Path) -> Any:
    """The YAML document (``hhrnet.io.load_yaml``: syntax errors, duplicate keys, alias bombs named)."""
    if not path.is_file():
        raise SpecError(f"{path}: no study definition (rows.yaml) in {path.parent}")
    return load_yaml(path, SpecError)


def _section(raw: Mapping[str, Any], name: str, path: Path) -> Mapping[str, Any]:
    value = raw.get(name)
    if not isinstance(value, Mapping) or not value:
        raise SpecError(f"{path}: top-level key {name!r} must be a non-empty mapping")
    return value


def load_spec(path: str | Path) -> StudySpec:
    """Read and check ``rows.yaml``; the first problem found is one ``SpecError``."""
    path = Path(path)
    raw = read_yaml(path)
    if not isinstance(raw, Mapping):
        raise SpecError(f"{path}: expected a mapping with {', '.join(SECTIONS)}")
    for name in SECTIONS:
        _section(raw, name, path)
    profiles = {n: _profile(n, p, f"{path}: profiles.{n}") for n, p in raw["profiles"].items()}
    trainings = {n: _training(n, t, f"{path}: trainings.{n}") for n, t in raw["trainings"].items()}
    evaluations = {n: _evaluation(n, e, f"{path}: evaluations.{n}", trainings)
                   for n, e in raw["evaluations"].items()}
    families = {n: _family(n, f, f"{path}: families.{n}", evaluations) for n, f in raw["families"].items()}
    published = {n: PublishedSource(n, **entry_fields(p, PUBLISHED, f"{path}: published.{n}"))
                 for n, p in raw["published"].items()}
    for ev in evaluations.values():
        for source, row in ev.published.items():
            rows = [r.get("evaluation") for r in published[source].rows] if source in published else None
            if rows is None or row not in rows:
                raise SpecError(f"{path}: evaluations.{ev.name}.published: no row {row!r} in published.{source}")
    for fam in families.values():
        source = fam.compare_published.get("source")
        if fam.compare_published and source not in published:
            raise SpecError(f"{path}: families.{fam.name}.compare_published.source: unknown source {source!r}")
    for source in published.values():
        for row in source.rows:  # a study evaluation, or a label for rows the study does not reproduce
            if ("evaluation" in row) == ("label" in row):
                raise SpecError(f"{path}: published.{source.name}: a row gives exactly one of 'evaluation' (a study "
                                f"evaluation) or 'label' (a published row without one), got {dict(row)!r}")
            if "label" in row and not (isinstance(row["label"], str) and row["label"]):
                raise SpecError(f"{path}: published.{source.name}: row label must be a non-empty string, "
                                f"got {row['label']!r}")
            if "evaluation" in row and row["evaluation"] not in evaluations:
                raise SpecError(f"{path}: published.{source.name}: row names unknown evaluation {row.get('evaluation')!r}")
    levers = {n: _lever(n, lv, f"{path}: levers.{n}", trainings, profiles) for n, lv in (raw.get("levers") or {}).items()}
    spec = StudySpec(path, trainings, evaluations, families, profiles, published, raw, levers)
    _check_configs(spec)
    _check_references(spec)
    return spec


def _profile(name: str, entry: Any, where: str) -> ProfileSpec:
    values = entry_fields(entry, PROFILE, where)
    data = values["data"]
    if not isinstance(data, Mapping) or len(data) != 1 or next(iter(data)) not in ("synthetic", "coco"):
        raise SpecError(f"{where}.data: expected {{synthetic: {{...}}}} or {{coco: {{...}}}}, got {data!r}")
    kind, body = next(iter(data.items()))
    values["data"] = SyntheticData(**entry_fields(body, SYNTHETIC, f"{where}.data.synthetic")) if kind == "synthetic" \
        else CocoData(**entry_fields(body, COCO, f"{where}.data.coco"))
    if not values["seeds"]:
        raise SpecError(f"{where}.seeds: expected at least one seed")
    return ProfileSpec(name, **values)


def _training(name: str, entry: Any, where: str) -> TrainingSpec:
    values = entry_fields(entry, TRAINING, where)
    if "data" in values:
        values["data"] = _training_data(values["data"], f"{where}.data")
    return TrainingSpec(name, **values)


def _training_data(entry: Any, where: str) -> TrainingData:
    data = entry_fields(entry, TRAINING_DATA, where)
    real = [k for k in ("coco", "crowdpose") if k in data]
    if len(real) > 1:
        raise SpecError(f"{where}: give one of 'coco' or 'crowdpose' (the real data), not both")
    synthetic = data.get("synthetic", {})
    if not isinstance(synthetic, Mapping):
        raise SpecError(f"{where}.synthetic: expected a mapping of synthetic settings, got {synthetic!r}")
    partial = {k: (check, False) for k, (check, _) in SYNTHETIC.items()}
    return TrainingData(synthetic=entry_fields(synthetic, partial, f"{where}.synthetic"),
                        real=CocoData(**entry_fields(data[real[0]], COCO, f"{where}.{real[0]}")) if real else None)


def _lever(name: str, entry: Any, where: str, trainings: Mapping[str, TrainingSpec],
           profiles: Mapping[str, ProfileSpec]) -> LeverSpec:
    values = entry_fields(entry, LEVER, where)
    if "data" in values:
        values["data"] = _training_data(values["data"], f"{where}.data")
    lever = LeverSpec(name, **values)
    if lever.training not in trainings:
        raise SpecError(f"{where}.training: unknown training {lever.training!r}")
    if lever.profile not in profiles:
        raise SpecError(f"{where}.profile: unknown profile {lever.profile!r} (profiles: {', '.join(profiles)})")
    if lever.pretrain and lever.trunk:
        raise SpecError(f"{where}: pretrain (a limb-segmentation backbone) and trunk (a pose network) exclude each other")
    return lever


def merged_data(profile: ProfileSpec, training: TrainingSpec | LeverSpec | None) -> SyntheticData | CocoData:
    """The data a training (or lever) reads in a profile: the profile's, with the entry's ``data`` over it."""
    data = profile.data
    if training is None:
        return data
    if isinstance(data, SyntheticData):
        if not training.data.synthetic:
            return data
        values = {**{k: getattr(data, k) for k in SYNTHETIC}, **training.data.synthetic}
        return SyntheticData(**values)
    return training.data.real or data


def _evaluation(name: str, entry: Any, where: str, trainings: Mapping[str, TrainingSpec]) -> EvaluationSpec:
    values = entry_fields(entry, EVALUATION, where)
    if ("training" in values) == ("checkpoint" in values):
        raise SpecError(f"{where}: give exactly one of 'training' (a study training) or 'checkpoint' (a file or "
                        "published name)")
    if "training" in values and values["training"] not in trainings:
        raise SpecError(f"{where}.training: unknown training {values['training']!r}")
    if "training" in values and "preset" in values:
        raise SpecError(f"{where}.preset: only a 'checkpoint' evaluation takes a preset (a training has its own)")
    return EvaluationSpec(name, **values)


def _family(name: str, entry: Any, where: str, evaluations: Mapping[str, EvaluationSpec]) -> FamilySpec:
    values = entry_fields(entry, FAMILY, where)
    try:
        values["expect"] = tuple(Expectation.parse(text) for text in values.get("expect", ()))
    except ValueError as err:
        raise SpecError(f"{where}.expect: {err}") from None
    unknown = [e for e in values["evaluations"] if e not in evaluations]
    unknown += [n for e in values["expect"] for n in (e.a, e.b) if n not in evaluations]
    if unknown:
        raise SpecError(f"{where}: names unknown evaluations {unknown}")
    return FamilySpec(name, **values)


def _check_references(spec: StudySpec) -> None:
    for kind, entries in (("trainings", spec.trainings), ("evaluations", spec.evaluations)):
        for name, entry in entries.items():
            unknown = [p for p in entry.profiles or () if p not in spec.profiles]
            if unknown:
                raise SpecError(f"{spec.path}: {kind}.{name}.profiles: unknown profile {unknown[0]!r} "
                                f"(profiles: {', '.join(spec.profiles)})")
    for prof in spec.profiles.values():
        unknown = [t for t in prof.trainings or () if t not in spec.trainings]
        if unknown:
            raise SpecError(f"{spec.path}: profiles.{prof.name}.trainings: unknown training {unknown[0]!r} "
                            f"(trainings: {', '.join(spec.trainings)})")
    for t in spec.trainings.values():
        unknown = [p for p in t.profile_changes if p not in spec.profiles]
        if unknown:
            raise SpecError(f"{spec.path}: trainings.{t.name}.profile_changes: unknown profile {unknown[0]!r} "
                            f"(profiles: {', '.join(spec.profiles)})")
        kset = preset(t.preset).override(**t.changes).data.keypoints
        for name, prof in spec.profiles.items():
            if t.profiles is not None and name not in t.profiles:
                continue
            data = merged_data(prof, t)
            if isinstance(data, SyntheticData) and (data.keypoints or "coco") != kset:
                raise SpecError(f"{spec.path}: trainings.{t.name}: its keypoint set is {kset!r} but profile {name!r} "
                                f"generates {data.keypoints or 'coco'!r} data; set data.synthetic.keypoints: {kset}")
            if isinstance(data, CocoData) and kset != "coco" and t.data.real is None:
                raise SpecError(f"{spec.path}: trainings.{t.name}: its keypoint set is {kset!r} but profile {name!r} "
                                f"reads COCO at {data.root}; give data.{kset}: {{root, train_split, val_split}}")
    for t in spec.trainings.values():
        size = preset(t.preset).override(**t.changes).input_size
        for name, prof in spec.profiles.items():
            runs = (t.profiles is None or name in t.profiles) and (prof.trainings is None or t.name in prof.trainings)
            if runs and prof.input_sizes is not None and size not in prof.input_sizes:
                raise SpecError(f"{spec.path}: profiles.{name}.input_sizes: no entry for {size}, the input size of "
                                f"training {t.name!r}")
            width = preset(t.preset).model.width
            if runs and prof.backbones and width not in prof.backbones:
                raise SpecError(f"{spec.path}: profiles.{name}.backbones: no backbone for width {width}, the "
                                f"width of training {t.name!r}")
    made = {lv.trunk for lv in spec.levers.values()} | {lv.pretrain for lv in spec.levers.values()}
    for name, prof in spec.profiles.items():
        for width, backbone in prof.backbones.items():
            if backbone.endswith(".pth") and backbone not in made:
                raise SpecError(f"{spec.path}: profiles.{name}.backbones.{width}: {backbone} is no lever's trunk "
                                "(a file a profile starts from is trained by a lever with `trunk: <that path>`)")


def checkpoint_preset(ev: EvaluationSpec) -> str:
    """The preset of a ``checkpoint`` evaluation: its own, the published name's (``hhrnet.hub``), or w32_512."""
    if ev.preset is not None:
        return ev.preset
    entry = REGISTRY.get(ev.checkpoint or "")
    return entry.preset if entry is not None and entry.preset else "w32_512"


def _check_configs(spec: StudySpec) -> None:
    """Every config change names a real key with a valid value (checked on the unscaled preset)."""
    def check(where: str, build: Callable[[], Any]) -> None:
        try:
            build()
        except ConfigError as err:
            raise SpecError(f"{spec.path}: {where}: {err}") from None

    for t in spec.trainings.values():
        check(f"trainings.{t.name}.changes", lambda: preset(t.preset).override(**t.changes))
        for name, changes in t.profile_changes.items():
            check(f"trainings.{t.name}.profile_changes.{name}",
                  lambda: preset(t.preset).override(**t.changes).override(**changes))
    for e in spec.evaluations.values():
        base = spec.trainings[e.training] if e.training else None
        check(f"evaluations.{e.name}.test", lambda: preset(base.preset if base else checkpoint_preset(e))
              .override(**(base.changes if base else {})).override(**e.test))
    for p in spec.profiles.values():
        check(f"profiles.{p.name}.changes", lambda: preset("w32_512").override(**p.changes))
    for lv in spec.levers.values():
        t = spec.trainings[lv.training]
        check(f"levers.{lv.name}", lambda: preset(t.preset).override(**t.changes).override(**lv.base).override(**lv.changes))
