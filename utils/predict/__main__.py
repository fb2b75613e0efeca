"""python -m utils.predict: the command line (utils.predict.cli), with the launcher's process
settings (utils.support.host_tuning: XLA's classic CPU kernels), applied before JAX starts.

The process ends with os._exit once the outputs are written and closed and the summary is
flushed: the interpreter's own teardown (freeing JAX's runtime) took 0.3 s of every run and
keeps nothing. An error that escapes main() still ends the usual way, with its traceback."""
import os
import sys

from utils.support import host_tuning

host_tuning.apply()

from utils.predict.cli import main  # noqa: E402 - after the settings JAX reads once

status = main()
sys.stdout.flush()
sys.stderr.flush()
os._exit(status)
