"""Run the study: `python experiments/run.py --profile default [--only w32_512] [--force]`.

Equivalent to `python -m hhrnet study ...` (parsed in `hhrnet/cli.py`; the driver is `hhrnet/study/`).
"""

import sys
from pathlib import Path

from hhrnet.cli import main

if __name__ == "__main__":
    sys.exit(main(["study", "--experiments", str(Path(__file__).parent), *sys.argv[1:]]))
