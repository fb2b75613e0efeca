"""``python -m utils.sweep``: a grid of launcher keywords run as ordinary runs, resumable as a whole.

    python -m utils.sweep recipe=modern network=S n_epochs=20 \\
        --vary "class_weights=[None, 'balanced']" --vary "sampler=[None, 'balanced']" \\
        --seeds 2 --parallel 1 --out runs/imbalance

``grid`` turns the command line into the grid's runs and refuses a bad grid before anything
starts, through the launcher's own keyword resolution; ``runner`` runs each one as a child
launcher process (``run_experiment.py``) in its own run folder under ``--out``, all into one
registry, skipping finished runs and resuming stopped ones; ``cli`` is the command line.
"""
