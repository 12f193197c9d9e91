"""Learning curves of a study training under one lever at a time: the ``levers:`` of rows.yaml.

    python experiments/levers.py he he_light_aug         # train (resumably), validate along training
    python experiments/levers.py pretrain_cpu_w16        # the backbone the *_pretrained levers start from
    python experiments/levers.py trunk_w16 trunk_w24     # the shared trunks every cpu training starts from
    python experiments/levers.py --list

Each run writes ``results/levers/<name>.json`` (``hhrnet.study.levers``); checkpoints go to the study cache.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from hhrnet.study import Study
from hhrnet.study.levers import record_lever, run_lever

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("levers", nargs="*")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--no-diagnostics", action="store_true", help="skip the final isolating diagnostics")
    parser.add_argument("--record", metavar="RUN_DIR", help="write the lever's JSON from an existing run folder")
    args = parser.parse_args(argv)
    study = Study.load(HERE)
    levers = study.definition.levers
    if args.list or not args.levers:
        for name, lever in levers.items():
            print(f"{name:24s} {json.dumps(dict(lever.changes))}")
        return 0
    unknown = [n for n in args.levers if n not in levers]
    if unknown:
        print(f"levers: unknown lever(s) {', '.join(unknown)}; see --list", file=sys.stderr)
        return 2
    if args.record:
        print(record_lever(study, args.levers[0], Path(args.record)))
        return 0
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    for name in args.levers:
        print(run_lever(study, name, diagnose=not args.no_diagnostics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
