"""Suggesting the valid name a person most likely meant, for the 'did you mean' in errors."""
from __future__ import annotations

import difflib


def closest_name(name: str, valid) -> str:
    """' (did you mean 'x'?)' for the valid name closest to ``name``, or '' if none is close."""
    by_lower = {str(v).lower(): v for v in valid}
    match = difflib.get_close_matches(str(name).lower(), list(by_lower), n=1, cutoff=0.5)
    return f" (did you mean {by_lower[match[0]]!r}?)" if match else ""
