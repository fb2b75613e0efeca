"""Independent NumPy implementations (float64) the layers are compared with."""
import numpy as np


def conv_same(x, w):
    """Direct 'same' cross-correlation, NHWC x HWIO, by explicit sums over the window."""
    n, h, wd, c = x.shape
    kh, kw, _, o = w.shape
    ph, pw = (kh - 1) // 2, (kw - 1) // 2
    xp = np.pad(x, ((0, 0), (ph, kh - 1 - ph), (pw, kw - 1 - pw), (0, 0)))
    out = np.zeros((n, h, wd, o))
    for i in range(kh):
        for j in range(kw):
            out += np.einsum("nhwc,co->nhwo", xp[:, i:i + h, j:j + wd, :], w[i, j])
    return out


def batch_norm(x, gamma, beta, mean=None, var=None, eps=1e-5):
    """Normalise per feature (last axis): with the batch's statistics when mean/var are None
    (train mode, biased variance), else with the given ones (test mode)."""
    axes = tuple(range(x.ndim - 1))
    if mean is None:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def relu(x):
    return np.maximum(x, 0.0)
