"""The test suite is an entry point like the launcher: it runs with the launcher's process
settings (utils.support.host_tuning), applied before any test starts JAX's backend."""
import os

from utils.support import host_tuning

host_tuning.apply()
# No persistent compilation cache for the app's runs inside the suite (utils.support.
# compile_cache): tests compile as they always did and write nothing into the user's home;
# tests/test_predict_shipped.py runs the cache in child processes of its own.
os.environ["FER_JAX_CACHE"] = "0"
