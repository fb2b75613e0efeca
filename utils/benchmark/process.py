"""A benchmark worker in a process of its own, answering (method, argument) calls."""
from __future__ import annotations

import multiprocessing
import os
import traceback

from utils.benchmark.workers import WORKERS


def _serve(connection, kind: str, config: dict) -> None:
    """Worker process: build ``kind``, then answer (method, argument) calls until 'stop'."""
    try:
        from utils.support import host_tuning

        host_tuning.apply()  # the product's settings (none when the coordinator said off)
        if config.get("force_host_devices"):  # before JAX starts: CPU devices to spread over
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                       f" --xla_force_host_platform_device_count="
                                       f"{config['force_host_devices']}").strip()
        worker = WORKERS[kind](config)
        connection.send(("ok", worker.info))
        while True:
            method, argument = connection.recv()
            if method == "stop":
                return
            connection.send(("ok", getattr(worker, method)(argument)))
    except BaseException as error:  # reported to the coordinator, which goes on without us
        connection.send(("error", f"{type(error).__name__}: {error}\n"
                                  f"{traceback.format_exc(limit=4)}"))


class WorkerProcess:
    def __init__(self, kind: str, config: dict):
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, kind, config), daemon=True)
        self.process.start()
        child.close()
        self.info = self._answer()

    def _answer(self):
        try:
            status, value = self.connection.recv()
        except EOFError:
            raise RuntimeError(f"worker died (exit code {self.process.exitcode})") from None
        if status != "ok":
            raise RuntimeError(value)
        return value

    def call(self, method: str, argument=None):
        self.connection.send((method, argument))
        return self._answer()

    def stop(self) -> None:
        if self.process.is_alive():
            try:
                self.connection.send(("stop", None))
            except (BrokenPipeError, OSError):
                pass
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.kill()
