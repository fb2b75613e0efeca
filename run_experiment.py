"""The experiment launcher: the thesis's methodology, automated end to end, and resumable.

    python run_experiment.py network=A dataset=datasets/fer2013_mirror.h5 n_epochs=100
    python run_experiment.py --help

or from Python with the same names (``test`` is the thesis's name for it):

    from run_experiment import run_experiment
    results = run_experiment(learning_rate=0.1, n_hidden=[1024], p_dropConv=[0.2, 0.3, 0.4, 0.5])

With ``val=True``: (1) train on ``train_noval``, validating every epoch, and find the epoch of
minimum validation cross-entropy (the entropy point); (2) retrain from the same initialisation on
the full training set for that many epochs; (3) anneal (``anneal_epochs`` at the learning rate
times ``anneal_factor``); (4) test, plainly and with each test image's pre-softmax outputs summed
over its augmented variants. With ``val=False``: train ``n_epochs``, anneal, test. The phases and
their rules: ``utils/experiments/methodology.py``; the run itself:
``utils/experiments/experiment.py``; its folder, checkpoint and resume order:
``utils/experiments/run_folder.py``; the keywords: ``utils/experiments/keywords.py``. A checkpoint
is written atomically after every epoch and when the run is stopped (Ctrl-C, SIGTERM, an
exception); ``resume=True`` goes on from it, bit for bit.
"""
from __future__ import annotations

import os
import sys

if __name__ == "__main__":  # a Ctrl-C while JAX loads ends the launcher with one sentence
    from utils.experiments.signals import exit_at_once_on_ctrl_c

    exit_at_once_on_ctrl_c()

import jax  # noqa: E402 - after the Ctrl-C handling above

from loaders.sources import DatasetError  # noqa: E402
from utils.experiments.experiment import Experiment, NonFiniteCost, RunStopped  # noqa: E402
from utils.experiments.keywords import KeywordError, help_text, parse_command_line  # noqa: E402
from utils.experiments.keywords import resolve  # noqa: E402
from utils.experiments.signals import STARTING, ctrl_c_unwinds  # noqa: E402
from utils.models import model_io  # noqa: E402
from utils.support import host_tuning  # noqa: E402


def start_distributed(config: dict) -> None:
    """Join a multi-host run (JAX's own coordination service) when asked to."""
    if config["coordinator_address"] is not None and not jax.distributed.is_initialized():
        jax.distributed.initialize(config["coordinator_address"], config["num_processes"],
                                   config["process_id"])


def run_experiment(**keywords) -> dict:
    """Run one experiment from keyword arguments (see ``python run_experiment.py --help``).

    Applies ``utils.support.host_tuning`` to this process first (effective for XLA's kernels
    only if JAX has not run anything yet)."""
    host_tuning.apply()
    config = resolve(keywords)
    start_distributed(config)
    return Experiment(config).run()


test = run_experiment  # the thesis's name: test(learning_rate=0.1, ..., savename=...)
test.__test__ = False  # not a pytest test


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help", "help") for a in argv):
        print(help_text())
        return 0
    ctrl_c_unwinds()  # from here a Ctrl-C unwinds, so a dataset being built is cleaned up
    host_tuning.apply()
    try:
        config = resolve(parse_command_line(argv), "from the command line")
        start_distributed(config)
        experiment = Experiment(config)
    except (ValueError, DatasetError, model_io.ModelFileError) as err:
        # Refused before any work: a keyword, the dataset, a network or optimiser setting.
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{STARTING}", file=sys.stderr)
        return 130
    try:
        experiment.run()
    except (KeywordError, model_io.ModelFileError) as err:  # the run folder refused
        print(f"error: {err}", file=sys.stderr)
        return 2
    except NonFiniteCost as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except RunStopped as err:
        print(f"\n{err}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # a second Ctrl-C, or one before training started
        print(f"\nstopped at once (Ctrl-C): {experiment.folder.safe_state()}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    status = main()
    if status == 130:
        # A Ctrl-C may have cut XLA short (a compilation, a step), after which finalising the
        # interpreter can crash; what the run keeps is written and closed, so leave at once.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)
