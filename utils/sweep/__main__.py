"""python -m utils.sweep: see utils/sweep/cli.py."""
import sys

from utils.experiments.signals import exit_at_once_on_ctrl_c

exit_at_once_on_ctrl_c()  # a Ctrl-C while JAX loads ends the sweep with one sentence

from utils.sweep.cli import main  # noqa: E402 - after the Ctrl-C handling above

sys.exit(main())
