"""An independent, per-image statement of FER+'s label rules, for the tests of loaders.ferplus.

Written from the rules as FERPlus's paper and the shared data's README state them (and as
FERPlus's reader behaves on ties), one image at a time in plain Python, so that it shares no
code and no vectorisation with the implementation it checks. Votes are the 10 counts in the
file's order: 8 emotions, then unknown (index 8) and not-a-face (index 9).
"""
import numpy as np

UNKNOWN = 8
EPSILON = 0.001  # what multi_target adds to every class


def _taken_votes(counts, mode):
    """The votes a mode keeps for one image (a dict class -> votes), or None for 'unknown'."""
    total = sum(counts)
    if mode == "majority":
        top = max(counts)
        return {counts.index(top): top} if top > total / 2 else None
    if mode == "multi_target":
        taken = {i: c for i, c in enumerate(counts) if c >= 0.3 * total}
        return taken if sum(taken.values()) > total / 2 else None
    # probability / crossentropy: take the most voted classes, ties together, in class order,
    # while they hold under 75 % and fewer than 3 are taken; a tie reaching unknown or NF ends
    # the walk (and unknown/NF is not taken if an emotion was taken before it).
    remaining, taken, walked = list(counts), {}, 0
    while walked < 0.75 * total and len(taken) < 3:
        top = max(remaining)
        stop = False
        for i in [i for i, c in enumerate(remaining) if c == top]:
            taken[i], remaining[i] = top, 0
            walked += top
            if i >= UNKNOWN:
                stop = True
                if sum(taken.values()) > top:  # something was taken before it
                    del taken[i]
                break
        if stop:
            break
    if sum(taken.values()) <= total / 2 or len(taken) > 3:
        return None
    return taken


def ferplus_image(votes, mode):
    """(kept, top class index, target over the 8 emotions or None) for one image."""
    counts = [0 if c <= 1 else int(c) for c in votes]  # a single vote is noise
    taken = _taken_votes(counts, mode)
    if taken is None:
        return False, UNKNOWN, None
    full = np.zeros(10)
    for i, c in taken.items():
        full[i] = c
    top = int(np.argmax(full))  # the first of tied classes
    if top >= UNKNOWN:
        return False, top, None
    emotions = full[:UNKNOWN] / full[:UNKNOWN].sum()
    if mode == "multi_target":
        emotions = (1 - EPSILON) * (emotions > 0) + EPSILON
    return True, top, emotions
