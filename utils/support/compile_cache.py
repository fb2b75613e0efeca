"""JAX's persistent compilation cache for the prediction app (``python -m utils.predict``),
turned on by its command line where it loads the framework's models; importing this module
changes nothing.

A fresh process compiles the network for its batch shapes before the first face is classified
(about 0.8 s for the fast model's one view on a 2-core machine, more for the default model's
ten-crop); with the cache, a second run of the same model on the same machine and jaxlib loads
the compiled code from disk instead. JAX keys each entry by the computation, the jaxlib version
and the compile options, so a change of any of them compiles afresh; results are the same bits
either way. The folder: ``$FER_JAX_CACHE``, else ``$XDG_CACHE_HOME/fer-jax/compiled`` (by
default ``~/.cache/fer-jax/compiled``); ``FER_JAX_CACHE=0`` leaves the cache off.
"""
from __future__ import annotations

import os
from pathlib import Path

OFF = "0"


def cache_folder() -> Path | None:
    """Where the cache lives on this machine, or None when the environment turns it off."""
    chosen = os.environ.get("FER_JAX_CACHE")
    if chosen == OFF:
        return None
    if chosen:
        return Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fer-jax" / "compiled"


def enable() -> Path | None:
    """Turn the cache on for this process (before its first compilation); the folder used, or
    None where the environment turns it off or the folder cannot be created (then every run
    compiles, as without the cache)."""
    folder = cache_folder()
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", str(folder))
    # Every compilation is kept: the apps' few shapes compile in about a second each.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
