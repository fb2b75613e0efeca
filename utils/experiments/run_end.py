"""The end of a run: the test once training is over, the saved model, the records.

Model selection never reads the test: it is computed here, after the last phase (and, printed
only, after epochs with ``test_each_epoch``).
"""
from __future__ import annotations

import numpy as np

from loaders.hdf5 import read_test_aug_source_index, read_usage
from utils.experiments import console
from utils.evaluation.results import confusion_matrix, results_on_test
from utils.experiments.records import plot_confusion, record_run
from utils.experiments.run_folder import MODEL
from utils.experiments.run_setup import RUN_MANAGEMENT, STATS_EPOCH_OFFSET


def final_test(run) -> tuple[dict, bytes | None]:
    """The test once training is over: BN population statistics, the plain and the
    augmented test, the confusion matrix (plotted: its PNG, None where no files are written)."""
    console.log("\n== test ==")
    run.population_statistics(run.phases[-1].split, STATS_EPOCH_OFFSET)
    logits, labels = run.predict("test")
    views = view_logits_of_test(run, len(labels))
    results, predictions = results_on_test(logits, labels, read_usage(run.dataset, "test"),
                                           *views, class_names=list(run.info["class_names"]))
    counts = confusion_matrix(labels, predictions, len(run.info["class_names"]))
    results["confusion"] = counts.tolist()
    results["class_names"] = list(run.info["class_names"])
    n_online = run.steps.views.n_views
    title = ("plain test" if views[0] is None else "augmented test (outputs summed over "
             + ("variants)" if n_online == 1 else f"{n_online} views of each variant)"))
    if not run.folder.writes_files:
        return results, None
    return results, plot_confusion(run.folder.file("confusion.png"), counts,
                                   list(run.info["class_names"]),
                                   f"{run.network.name} on {run.dataset.name}: {title}")


def view_logits_of_test(run, n_test: int):
    """(logits of every test-time view, the test image of each row), or (None, None):
    the dataset's variants of each test image (/test_aug), each in its online views."""
    n_online = run.steps.views.n_views
    if not run.has_test_aug and n_online == 1:
        return None, None
    split = "test_aug" if run.has_test_aug else "test"
    logits, _ = run.steps.predict(run.model_params(), run.state.bn_state,
                                  run.loader(split, training=False).batches(0),
                                  gather=run.parallel.gather, views=n_online > 1)
    source = (read_test_aug_source_index(run.dataset) if run.has_test_aug
              else np.arange(n_test))
    return logits, np.repeat(source, n_online)


def finish_run(run) -> dict:
    """Test, save the model, write the records and the registry row, print the summary."""
    results, confusion_png = final_test(run)
    p = run.progress
    results.update({
        "class_weights": None if run.class_weights is None else list(run.class_weights),
        "entropy_epoch": p.entropy_epoch,
        "best_val_cost": p.best["val_cost"] if p.best else None,
        "best_val_error": p.best["val_error"] if p.best else None,
        "epochs": {ph.name: sum(1 for h in p.history if h["phase"] == ph.name)
                   for ph in run.phases},
        "train_seconds": round(p.train_seconds, 1),
        "seconds_per_epoch": round(p.train_seconds / max(len(p.history), 1), 2),
        "time_budget_estimate": p.budget,
        "parameters": run.network.param_count(),
        **run.parallel.devices_record(),  # those of the launch that finished the run
    })
    run.save_model(MODEL, run.model_params(), run.state.bn_state,
                   {"history": p.history, "results": results})
    if run.folder.writes_files:
        record_run(run.folder, run.config, results, p.history, p.entropy_epoch,
                   RUN_MANAGEMENT, run.code_version)
        definition = {k: v for k, v in run.config.items() if k not in RUN_MANAGEMENT}
        run.events.finish(definition, results, confusion_png, len(p.history))
        run.folder.remove_checkpoint()
    console.print_summary(results, run.network.name, run.dataset.name, run.config)
    return results
