"""A run's life: the launcher's keywords and recipes, the thesis's methodology as data, one
experiment following it (set-up, epochs, checkpoints, stop requests, the end), its folder,
what it prints and what it leaves behind (history, plots, the registry row)."""
