"""The test suite is an entry point like the launcher: it runs with the launcher's process
settings (utils.support.host_tuning), applied before any test starts JAX's backend."""
import os

from utils.support import host_tuning

host_tuning.apply()
# No persistent compilation cache for the app's runs inside the suite (utils.support.
# compile_cache): tests compile as they always did and write nothing into the user's home;
# tests/test_predict_shipped.py runs the cache in child processes of its own.
os.environ["FER_JAX_CACHE"] = "0"
# The inference convolutions' Winograd form (utils.nn.winograd, chosen on the CPUs measured)
# compiles about a second longer a layer; its own tests turn it on, the rest of the suite
# compiles the plain convolutions (the same values within float32 rounding) unless the
# environment says FER_WINOGRAD=1 (the whole suite with the form: slower to compile).
os.environ.setdefault("FER_WINOGRAD", "0")
