"""The test suite is an entry point like the launcher: it runs with the launcher's process
settings (utils.support.host_tuning), applied before any test starts JAX's backend."""
from utils.support import host_tuning

host_tuning.apply()
