"""The test suite is an entry point like the launcher: it runs with the launcher's process
settings (utils.support.host_tuning), applied before any test starts JAX's backend."""
import atexit
import os
import shutil
import tempfile

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
# One persistent compilation cache (JAX's) for this test process and the launchers it starts, in
# a fresh temporary folder removed at exit: many tests compile a computation compiled before
# (a run and its resumed twin, each a child process), which then loads instead. A cached
# computation is the same compiled code, so results are the same bits; nothing is kept
# between runs of the suite. Set before JAX is imported, which reads these at import.
_COMPILED = tempfile.mkdtemp(prefix="fer-tests-compiled-")
atexit.register(shutil.rmtree, _COMPILED, ignore_errors=True)
os.environ["JAX_COMPILATION_CACHE_DIR"] = _COMPILED
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
