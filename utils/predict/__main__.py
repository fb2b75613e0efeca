"""python -m utils.predict: the command line (utils.predict.cli)."""
import sys

from utils.predict.cli import main

sys.exit(main())
