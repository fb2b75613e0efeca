# Process-wide CPU settings, applied before anything starts JAX's backend (see host_tuning).
from utils import host_tuning  # noqa: F401
