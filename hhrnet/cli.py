"""``python -m hhrnet <command>``: the package's entry points for people who don't write Python.

Every command fails with one line naming the file or key at fault (exit code 1); ``--debug`` shows
the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import Config, load_config, parse_overrides


def config_from_args(args: argparse.Namespace) -> Config | None:
    if args.config is None:
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
    checkpoint = train(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    print(f"trained {cfg.name}: {checkpoint}")


def cmd_synth(args: argparse.Namespace) -> None:
    from .data.synthetic import generate

    dataset = generate(out_dir=args.out, n_train=args.train, n_val=args.val, size=args.size, seed=args.seed,
                       workers=args.workers, image_format=args.format, force=args.force, keypoints=args.keypoints)
    print(f"synthetic {args.keypoints} keypoints dataset (COCO format) in {dataset.root}")


def test_config_from_args(args: argparse.Namespace):
    from .config import TestConfig

    return TestConfig(flip_test=not args.no_flip, scales=(2.0, 1.0, 0.5) if args.multi_scale else (1.0,))


def cmd_predict(args: argparse.Namespace) -> None:
    """Poses for image files: ``predictions.json`` and one drawn image per input in ``--out``."""
    import cv2

    from .data.coco import read_rgb_image
    from .inference import Predictor, predict_files
    from .viz import draw_poses

    predictor = Predictor.from_checkpoint(args.checkpoint, test=test_config_from_args(args), config=config_from_args(args))
    target = predict_files(predictor, args.images, args.out, progress=not args.no_progress)
    for record in json.loads(target.read_text()):
        people = [p["keypoints"] for p in record["people"] if p["score"] >= args.min_score]
        image = read_rgb_image(Path(record["file"]))
        drawn = draw_poses(image, people, kset=predictor.keypoints) if people else image
        cv2.imwrite(str(Path(args.out) / f"{Path(record['file']).stem}_poses.jpg"), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
    print(f"wrote {target} and {len(args.images)} drawn image(s) in {args.out}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    """Keypoint AP of a checkpoint on a COCO-format split (the protocol of its keypoint set: COCO or
    CrowdPose); JSON + markdown summary in ``--out``."""
    from .evaluation import metrics_markdown
    from .inference import Predictor, evaluate_dataset

    predictor = Predictor.from_checkpoint(args.checkpoint, test=test_config_from_args(args), config=config_from_args(args))
    paths = {"annotation_file": args.annotations, "image_dir": args.images} if args.annotations else \
        {"root": args.data, "split": args.split}
    metrics = evaluate_dataset(predictor, out_dir=args.out, progress=not args.no_progress, backend="auto", **paths)
    print(metrics_markdown(metrics, title=f"{predictor.cfg.name}: {args.split or args.annotations}"))


def add_test_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, type=Path,
                   help="hhrnet, official or mmpose checkpoint, or a published name (w32_512, w32_640, w48_512)")
    p.add_argument("--multi-scale", action="store_true", help="test scales 2, 1, 0.5 (the published multi-scale rows)")
    p.add_argument("--no-flip", action="store_true", help="no flip test")
    p.add_argument("--no-progress", action="store_true")
    add_config_options(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hhrnet", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="parameters and FLOPs of a configuration")
    add_config_options(p, required=True)
    p.add_argument("--input-size", type=int)
    p.set_defaults(run=cmd_info)

    p = sub.add_parser("convert", help="official/mmpose checkpoint → hhrnet checkpoint with embedded config")
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    add_config_options(p)
    p.set_defaults(run=cmd_convert)

    p = sub.add_parser("export", help="export the network (no grouping) to ONNX")
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--onnx", required=True, type=Path)
    p.add_argument("--input-size", type=int, help="example input side (axes stay dynamic)")
    add_config_options(p)
    p.set_defaults(run=cmd_export)

    p = sub.add_parser("synth", help="write a procedural multi-person dataset in COCO keypoints format")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--train", type=int, default=1000, help="training images")
    p.add_argument("--val", type=int, default=200, help="validation images")
    p.add_argument("--size", type=int, default=256, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, help="processes (default: all cores)")
    p.add_argument("--format", choices=("png", "jpg"), default="png")
    p.add_argument("--keypoints", choices=("coco", "crowdpose"), default="coco",
                   help="joints per person; crowdpose also writes each image's crowdIndex")
    p.add_argument("--force", action="store_true", help="regenerate even if DIR holds this exact dataset")
    p.set_defaults(run=cmd_synth)

    p = sub.add_parser("predict", help="poses for image files (JSON + drawn skeletons)")
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--min-score", type=float, default=0.1, help="people drawn (all are in the JSON)")
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
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs still go to metrics.jsonl)")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("study", help="run the papermill study (experiments/rows.yaml) for a profile",
                       add_help=False)
    p.set_defaults(run=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["study"]:  # the study driver has its own options
        from .study import main as study_main

        return study_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except KeyboardInterrupt:
        print(f"hhrnet {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # one readable line; the traceback only on request
        if args.debug:
            raise
        print(f"hhrnet {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0
