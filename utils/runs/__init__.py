"""``python -m utils.runs``: finished runs as a leaderboard, in the terminal and as an HTML report.

    python -m utils.runs runs/imbalance --recall disgust,fear
    python -m utils.runs                       # the registry, trained_models/experiments.csv

``collect`` reads the runs (a sweep folder, a run folder or a registry), ``table`` ranks them and
groups seeds, ``report`` writes the page and its pictures, ``cli`` is the command line.
"""
