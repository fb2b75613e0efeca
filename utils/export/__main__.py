"""python -m utils.export: the command line (utils.export.cli)."""
import sys

from utils.export.cli import main

sys.exit(main())
