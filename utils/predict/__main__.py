"""python -m utils.predict: the command line (utils.predict.cli), with the launcher's process
settings (utils.support.host_tuning: XLA's classic CPU kernels), applied before JAX starts."""
import sys

from utils.support import host_tuning

host_tuning.apply()

from utils.predict.cli import main  # noqa: E402 - after the settings JAX reads once

sys.exit(main())
