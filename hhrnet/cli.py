"""``python -m hhrnet <command>``: the package's entry points for people who don't write Python.

Every command fails with one line naming the file or key at fault (exit code 1); ``--debug`` shows
the traceback instead.  Each command imports what it runs inside its function: that defers torch and
cv2 (loaded by the model, data and inference modules), so ``--help`` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from .config import INPUT_STRIDE, Config, load_config, parse_overrides
from .io import refuse_overlap, short_repr
from .keypoints import DEFAULT_KEYPOINTS, registered
from .sections import MULTI_SCALE, PRECISIONS, ConfigError

MAX_MESSAGE = 400  # characters of an error line: a message quoting hostile input stays readable


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{short_repr(text)} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def input_side(text: str) -> int:
    """argparse type: a network input side, a positive multiple of the network's coarsest stride."""
    value = positive_int(text)
    if value % INPUT_STRIDE:
        raise argparse.ArgumentTypeError(f"must be a positive multiple of {INPUT_STRIDE}, got {value}")
    return value


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{short_repr(text)} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def config_from_args(args: argparse.Namespace) -> Config | None:
    if args.config is None:
        if args.set:
            raise ConfigError(f"--set {args.set[0]} needs --config (the preset or file it changes)")
        return None
    return load_config(args.config, parse_overrides(args.set or []))


def add_config_options(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--config", required=required,
                   help="preset (w32_512, w32_640, w48_512, w48_640, crowdpose_w32_512) or YAML file")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config field, e.g. --set model.width=8 (repeatable)")


def cmd_info(args: argparse.Namespace) -> None:
    """Parameters and FLOPs of a configuration."""
    from .model import HigherHRNet, count_flops, count_parameters

    cfg = config_from_args(args)
    model = HigherHRNet(cfg.model)
    size = args.input_size or cfg.input_size
    info = {"config": cfg.name, "input_size": size, "parameters": count_parameters(model),
            "gflops": round(count_flops(model, (size, size)) / 1e9, 2)}
    print(json.dumps(info, indent=2))


def cmd_convert(args: argparse.Namespace) -> None:
    from .checkpoints import convert

    cfg, note = convert(args.src, args.dst, config_from_args(args))
    print(f"wrote {args.dst} ({cfg.name}, width {cfg.model.width}; {note})")


def cmd_export(args: argparse.Namespace) -> None:
    from .checkpoints import export_onnx, load_model

    refuse_overlap([args.onnx], [args.checkpoint], "--onnx")
    model, cfg = load_model(args.checkpoint, config_from_args(args))
    size = args.input_size or cfg.input_size
    export_onnx(model, args.onnx, (size, size))
    print(f"wrote {args.onnx} (network only; outputs out0..out{cfg.model.num_deconvs})")


def cmd_train(args: argparse.Namespace) -> None:
    """Train (or resume) a run; under torchrun every process executes this same command."""
    from .engine import train

    overrides = parse_overrides(args.set or [])
    if args.data is not None:
        overrides["train.data_root"] = str(args.data)
    cfg = load_config(args.config, overrides)
    checkpoint = train(cfg, args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    print(f"trained {cfg.name}: {checkpoint}")


def cmd_synth(args: argparse.Namespace) -> None:
    from .data.synthetic import generate

    if args.like is not None:
        return synth_like(args)
    dataset = generate(out_dir=args.out, n_train=args.train or 1000, n_val=args.val or 200, size=args.size,
                       seed=args.seed, workers=args.workers, image_format=args.format, force=args.force,
                       keypoints=args.keypoints)
    print(f"synthetic {args.keypoints} keypoints dataset (COCO format) in {dataset.root}")


def synth_like(args: argparse.Namespace) -> None:
    """The distribution ``--like`` was trained on: its record, or for a study checkpoint written before
    records the study's data of the same folder name (``experiments/rows.yaml`` in the working folder)."""
    from .checkpoints import open_checkpoint
    from .config import from_dict
    from .data.synthetic import generate
    from .study import Study, generate_synthetic
    from .trained_on import checkpoint_record, describe, synthetic_settings

    checkpoint = open_checkpoint(args.like)
    _, embedded = checkpoint.weights()
    if embedded is None:
        raise ValueError(f"{args.like}: not an hhrnet checkpoint, so it does not say what it was trained on")
    record = checkpoint_record(checkpoint, from_dict(embedded))
    if "generator" in record or record["kind"] != "synthetic":
        counts = {k: v for k, v in (("n_train", args.train), ("n_val", args.val)) if v is not None}
        dataset = generate(out_dir=args.out, workers=args.workers, force=args.force,
                           **{**synthetic_settings(record), **counts})
        print(f"synthetic dataset like {args.like} ({describe(record)}) in {dataset.root}")
        return
    study = Study.load("experiments") if Path("experiments/rows.yaml").is_file() else None
    specs = [study.data_spec(p, t) for p in study.definition.profiles for t in study.trainings(p)] if study else []
    syn = next((s["synthetic"] for s in specs if Path(s["data_root"]).name == Path(record["root"]).name), None)
    if syn is None:
        raise ValueError(f"{args.like}: trained on {describe(record)} before checkpoints recorded their generator "
                         f"settings, and no profile of ./experiments/rows.yaml makes {Path(record['root']).name}")
    counts = {k: v for k, v in (("train", args.train), ("val", args.val)) if v is not None}
    generate_synthetic(args.out, {**syn, **counts})
    print(f"synthetic dataset like {args.like} (the study's {Path(record['root']).name}) in {args.out}")


def predictor_from_args(args: argparse.Namespace, **kwargs):
    """The checkpoint's ``Predictor``, testing as the study would: ``--config``'s ``test`` (with its
    ``--set test.*``) or else the checkpoint's own, changed only by ``--no-flip`` / ``--multi-scale``."""
    import dataclasses

    from .inference import Predictor

    requested = config_from_args(args)
    predictor = Predictor.from_checkpoint(args.checkpoint, config=requested, **kwargs)
    changes = {"flip_test": False} if args.no_flip else {}
    if args.multi_scale:
        changes["scales"] = MULTI_SCALE
    if args.precision:
        changes["precision"] = args.precision
    predictor.test = dataclasses.replace((requested or predictor.cfg).test, **changes)
    print(predictor.precision)
    return predictor


def cmd_predict(args: argparse.Namespace) -> int:
    """Poses for images, folders, globs and videos: COCO results JSON and drawn images in ``--out``."""
    from .predict import predict_inputs

    predictor = predictor_from_args(args, batch_size=args.batch_size)
    drawn = {} if args.min_score is None else {"min_score": args.min_score}
    report = predict_inputs(predictor, args.inputs, args.out, overwrite=args.overwrite, progress=not args.no_progress,
                            draw=not args.no_draw, **drawn)
    for failure in report.failures:
        print(f"hhrnet predict: error: {failure}", file=sys.stderr)
    print(report.summary())
    return 1 if report.failures else 0


def cmd_evaluate(args: argparse.Namespace) -> None:
    """Keypoint AP of a checkpoint on a COCO-format split (the protocol of its keypoint set: COCO or
    CrowdPose); JSON + markdown summary in ``--out``."""
    from .evaluation import OUTPUTS, evaluate, metrics_markdown

    if (args.annotations is None) != (args.images is None):
        raise ValueError("--annotations and --images go together (or give --data and --split)")
    if args.annotations is not None and (args.data is not None or args.split is not None):
        raise ValueError("give either --annotations and --images, or --data and --split, not both")
    if args.annotations is None and (args.data is None or args.split is None):
        raise ValueError("give --data and --split (or --annotations and --images)")
    if args.out is not None:
        refuse_overlap([args.out / name for name in OUTPUTS], [args.checkpoint], "output")
    predictor = predictor_from_args(args)
    paths = {"annotation_file": args.annotations, "image_dir": args.images} if args.annotations else \
        {"root": args.data, "split": args.split}
    metrics = evaluate(predictor, out_dir=args.out, progress=not args.no_progress, backend="auto", **paths)
    print(metrics_markdown(metrics, title=f"{predictor.cfg.name}: {args.split or args.annotations}"))


def cmd_study(args: argparse.Namespace) -> None:
    """Run what is missing or stale in a profile, then gather its summary."""
    from .study import StudyError, run_study, run_workers

    if args.workers > 1:
        if args.force or args.no_wait:
            raise StudyError("--force and --no-wait need a single worker (--workers 1)")
        summary = run_workers(args.experiments, args.profile, args.workers, args.only, args.missing_only)
    else:
        summary = run_study(args.experiments, args.profile, args.only, args.force, args.missing_only,
                            wait=not args.no_wait)
    print(f"summary: {summary}")


# every command that reads a checkpoint takes the same (hhrnet.checkpoints.locate; names: hhrnet.hub.REGISTRY)
CHECKPOINT_HELP = ("hhrnet, official or mmpose checkpoint, or a published name (w32_512, w32_640, w48_512; "
                   "official_w32_512, official_w32_640, official_w48_640 once put in the weights cache)")


def add_test_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, type=Path, help=CHECKPOINT_HELP)
    p.add_argument("--multi-scale", action="store_true",
                   help=f"test scales {', '.join(f'{x:g}' for x in MULTI_SCALE)} (the published multi-scale rows)")
    p.add_argument("--no-flip", action="store_true", help="no flip test")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="network precision (default: the config's test.precision, fp32); auto = bf16 where the "
                        "CPU has bf16 matrix units and it measures faster")
    p.add_argument("--no-progress", action="store_true")
    add_config_options(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hhrnet", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="parameters and FLOPs of a configuration")
    add_config_options(p, required=True)
    p.add_argument("--input-size", type=input_side)
    p.set_defaults(run=cmd_info)

    p = sub.add_parser("convert", help="official/mmpose checkpoint → hhrnet checkpoint with embedded config")
    p.add_argument("src", type=Path, help=CHECKPOINT_HELP)
    p.add_argument("dst", type=Path, help="hhrnet checkpoint to write")
    add_config_options(p)
    p.set_defaults(run=cmd_convert)

    p = sub.add_parser("export", help="export the network (no grouping) to ONNX")
    p.add_argument("--checkpoint", required=True, type=Path, help=CHECKPOINT_HELP)
    p.add_argument("--onnx", required=True, type=Path)
    p.add_argument("--input-size", type=input_side, help="example input side (axes stay dynamic)")
    add_config_options(p)
    p.set_defaults(run=cmd_export)

    p = sub.add_parser("synth", help="write a procedural multi-person dataset in COCO keypoints format")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--like", type=Path, metavar="CHECKPOINT",
                   help="the distribution CHECKPOINT was trained on (sizes, seed, scene knobs); --train / --val change its counts")
    p.add_argument("--train", type=positive_int, help="training images (default 1000)")
    p.add_argument("--val", type=positive_int, help="validation images (default 200)")
    p.add_argument("--size", type=input_side, default=256, help="image side in pixels (a multiple of 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=positive_int, help="processes (default: all cores)")
    p.add_argument("--format", choices=("png", "jpg"), default="png")
    p.add_argument("--keypoints", choices=registered(), default=DEFAULT_KEYPOINTS,
                   help="keypoint set each person carries (hhrnet.keypoints); crowdpose also writes crowdIndex")
    p.add_argument("--force", action="store_true", help="regenerate even if DIR holds this exact dataset")
    p.set_defaults(run=cmd_synth)

    p = sub.add_parser("predict", help="poses for images, folders, glob patterns and videos (JSON + drawings)")
    p.add_argument("inputs", nargs="+", help="image or video files, folders (searched recursively), glob patterns")
    p.add_argument("--out", required=True, type=Path, help="outputs mirror the input names below this folder")
    p.add_argument("--min-score", type=fraction,
                   help="draw the people scoring at least this (default hhrnet.viz.MIN_SCORE; all are in the JSON)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="images per forward pass")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    p.add_argument("--no-draw", action="store_true", help="JSON only, no drawn images or videos")
    add_test_options(p)
    p.set_defaults(run=cmd_predict)

    p = sub.add_parser("evaluate", help="COCO keypoint AP of a checkpoint on a COCO-format split")
    p.add_argument("--data", type=Path, help="dataset root (ROOT/images/<split> or ROOT/<split> + ROOT/annotations)")
    p.add_argument("--split", help="e.g. val2017 or val")
    p.add_argument("--annotations", type=Path, help="explicit annotation file (with --images)")
    p.add_argument("--images", type=Path, help="explicit image folder (with --annotations)")
    p.add_argument("--out", type=Path, help="write results.json, metrics.json and metrics.md here")
    add_test_options(p)
    p.set_defaults(run=cmd_evaluate)

    p = sub.add_parser("train", help="train a configuration (single process, or under torchrun for DDP)")
    add_config_options(p, required=True)
    p.add_argument("--out", required=True, type=Path, help="run directory (config, last.pth, metrics.jsonl)")
    p.add_argument("--data", type=Path, help="dataset root (overrides train.data_root)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pth, exactly")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in RUN_DIR")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs still go to metrics.jsonl)")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("study", help="run the papermill study (experiments/rows.yaml) for a profile")
    p.add_argument("--profile", default="default", help="smoke | default | cpu | paper (see rows.yaml)")
    p.add_argument("--experiments", type=Path, default=Path("experiments"),
                   help="folder holding rows.yaml and the notebooks")
    p.add_argument("--only", nargs="+", metavar="TEXT", help="runs whose name contains any of these strings")
    p.add_argument("--force", action="store_true", help="re-run even up-to-date runs")
    p.add_argument("--missing-only", action="store_true", help="keep stale results (in the summary too), run only missing ones")
    p.add_argument("--no-wait", action="store_true",
                   help="fail instead of waiting when another study process is running the same run")
    p.add_argument("--workers", type=positive_int, default=1, metavar="N",
                   help="N study processes sharing the cores (two one-thread processes beat one two-thread one on CPU)")
    p.set_defaults(run=cmd_study)
    return parser


def one_line(err: BaseException) -> str:
    """An exception as one line of bounded length: its message (first line), or its type when it has none."""
    text = str(err).strip()
    if isinstance(err, KeyError) and text:
        text = f"missing key {text}"
    first = text.splitlines()[0] if text else type(err).__name__
    if len(first) > MAX_MESSAGE:
        first = first[:MAX_MESSAGE - 3] + "..."
    return first + (" (more with --debug)" if len(text.splitlines()) > 1 else "")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if not args.debug:  # OpenCV's FFmpeg backend logs to stderr itself (e.g. "moov atom not found" for a bad
        # video); hhrnet reports such a file in one line. Only read before cv2 is first imported.
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")  # AV_LOG_FATAL
    formatwarning = warnings.formatwarning
    if not args.debug:  # warnings as one line too, without the source line that raised them
        warnings.formatwarning = lambda message, category, *_, **__: f"hhrnet {args.command}: warning: {message}\n"
    try:
        code = args.run(args)
    except KeyboardInterrupt as err:
        if args.debug:
            raise
        print(f"hhrnet {args.command}: interrupted{': ' + str(err) if str(err) else ''}", file=sys.stderr)
        return 130
    except Exception as err:  # one readable line; the traceback only on request
        if args.debug:
            raise
        print(f"hhrnet {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 1
    finally:
        warnings.formatwarning = formatwarning
    return code or 0
