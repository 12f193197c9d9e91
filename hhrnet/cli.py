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
    p.add_argument("--config", required=required, help="preset (w32_512, w32_640, w48_512, w48_640) or YAML file")
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
                       workers=args.workers, image_format=args.format, force=args.force)
    print(f"synthetic COCO keypoints dataset in {dataset.root}")


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
    p.add_argument("--force", action="store_true", help="regenerate even if DIR holds this exact dataset")
    p.set_defaults(run=cmd_synth)

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
