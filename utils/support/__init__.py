"""What every other room uses and that uses nothing of the project: "did you mean" names,
files written so nothing is lost (atomic replacement, locks), the device mesh, and the process
settings entry points apply for CPU training (``host_tuning``)."""
