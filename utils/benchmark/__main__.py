"""``python -m utils.benchmark``: see ``utils.benchmark``."""
import sys

from utils.benchmark.cli import main

sys.exit(main())
