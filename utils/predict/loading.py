"""A model loaded in a thread of its own, so that a run reads its first images and finds their
faces while the model loads (importing JAX and loading the compiled network take seconds: on a
2-core machine the detector of a video had one core idle meanwhile).

    model = LoadingModel(lambda: load_models([path]))   # nothing loads yet
    model.begin()                                        # the load starts; returns at once
    model.class_names                                    # waits for the load, then delegates

``utils.predict``'s run begins the load once its input has been found usable (a folder
listed, a video opened, an image read), so that a run refused for its input or its output
folder ends at once instead of waiting for the load. Every attribute waits for the load (and
begins it if nothing did) and then is the loaded model's; an error of the load is raised,
unchanged, by the first attribute asked for after it (in the thread that asks).
"""
from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any, Callable


class LoadingModel:
    def __init__(self, load: Callable[[], Any]):
        self._future: Future = Future()
        # Not a daemon: an interpreter that exits mid-import of JAX can crash instead of
        # ending; a run that fails after the load began waits for the load to end.
        self._thread = threading.Thread(target=self._load, args=(load,),
                                        name="predict-model-load")
        self._begun = threading.Lock()

    def begin(self) -> None:
        """Start the load in its thread (once; later calls do nothing)."""
        if self._begun.acquire(blocking=False):
            self._thread.start()

    def _load(self, load: Callable[[], Any]) -> None:
        try:
            self._future.set_result(load())
        except BaseException as err:  # raised where the model is used
            self._future.set_exception(err)

    def loaded(self) -> Any:
        """The model, once loaded (its load's error, raised again, if it failed)."""
        self.begin()
        return self._future.result()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loaded(), name)


def begin_loading(model) -> None:
    """Start a LoadingModel's load (a model already loaded has nothing to begin)."""
    if isinstance(model, LoadingModel):
        model.begin()
