"""python -m utils.runs: see utils/runs/cli.py."""
import sys

from utils.runs.cli import main

sys.exit(main())
