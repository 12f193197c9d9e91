"""Run the study: `python experiments/run.py --profile default [--only w32_512] [--force]`.

Equivalent to `python -m hhrnet study ...`; the driver lives in `hhrnet/study.py`.
"""

import sys
from pathlib import Path

from hhrnet.study import main

if __name__ == "__main__":
    sys.exit(main(["--experiments", str(Path(__file__).parent), *sys.argv[1:]]))
