"""3x3 convolutions at inference by Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray,
"Fast Algorithms for Convolutional Neural Networks", 2016): 2.25x fewer multiplications.

For each 2x2 block of outputs, read as a 4x4 tile d of the zero-padded input (tiles overlap by
two pixels), and each 3x3 filter g:

    Y = A^T [(G g G^T) * (B^T d B)] A        (* elementwise, summed over input channels)

The transforms B^T d B and A^T m A are sums and differences of the tile's values; the product
summed over input channels is, for each of the 16 positions in the tile, one matrix product
[tiles, C_in] @ [C_in, C_out] (16 of them against the 9 of a direct convolution's taps). On
XLA's CPU backend the classic convolution tops out near its matrix products' speed, so fewer
products is what makes it faster. Measured on 2-core AMD EPYCs: at inference (160 images,
Zen 4) 1.2-1.6x for the layers with 64 or more input channels (20x20 down to 5x5), 0.8-1.05x
with 32; in training (128 images, Zen 3) the forward 1.1-1.8x and the input gradient 1.0-1.8x
where both sides have 64 or more channels, 0.8-0.9x where one has 32. So only convolutions
with at least 64 channels in and out take it. The values equal the direct sum within float32
rounding (about 1e-6 of the largest output; tests/test_winograd.py against
``lax.conv_general_dilated``).

A training step takes it twice: for the forward and for the input gradient, which is the same
'same' 3x3 convolution of the output gradient with the filters flipped and their channels
swapped. The weight gradient (a reduction over the whole batch, where these matrix products
would be long and thin) is the plain convolution's (``cpu_kernels.conv_weight_gradient``), so
a step's values equal the plain step's within float32 rounding, not bit for bit (same seed,
same machine: same bits, as always).
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from utils.nn import cpu_kernels
from utils.support import host_tuning

# F(2x2, 3x3)'s transforms (Lavin and Gray, section 4.1).
INPUT_TRANSFORM = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
                           np.float32)  # B^T
FILTER_TRANSFORM = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]],
                            np.float32)  # G
OUTPUT_TRANSFORM = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)  # A^T

# The fewest channels, in and out, the form pays on (measured: see the module's docstring), and
# the CPU kinds it was measured on; FER_WINOGRAD=1 or 0 overrides the choice (to measure it on
# another).
MIN_CHANNELS = 64
MEASURED_CPU_VENDORS = ("AuthenticAMD",)


def chosen(x, w) -> bool:
    """Whether ``rna.conv2d`` takes this form for x (NHWC) and w (HWIO) on this machine."""
    kh, kw, c_in, c_out = w.shape
    if ((kh, kw) != (3, 3) or min(c_in, c_out) < MIN_CHANNELS or x.dtype != jnp.float32
            or jax.default_backend() != "cpu"):
        return False
    override = os.environ.get("FER_WINOGRAD")
    if override in ("0", "1"):
        return override == "1"
    return host_tuning.cpu_vendor() in MEASURED_CPU_VENDORS


def _combination(coefficients, terms):
    """sum of coefficient * term, skipping zeros and multiplying only where not +-1."""
    total = None
    for coefficient, term in zip(coefficients, terms):
        if coefficient == 0:
            continue
        term = term if coefficient == 1 else -term if coefficient == -1 else coefficient * term
        total = term if total is None else total + term
    return total


@jax.custom_vjp
def conv3x3(x, w):
    """'same' 3x3 cross-correlation of float32 NHWC x with HWIO w (``rna.conv2d``'s sum), and
    its input gradient, by F(2x2, 3x3); its weight gradient the plain convolution's."""
    return _winograd(x, w)


def _conv3x3_fwd(x, w):
    return _winograd(x, w), (x, w)


def _conv3x3_bwd(residuals, g):
    x, w = residuals
    input_gradient = _winograd(g, cpu_kernels.input_gradient_filters(w))
    return input_gradient, cpu_kernels.conv_weight_gradient(x, g, (3, 3))


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)


def _winograd(x, w):
    n, h, width, c_in = x.shape
    c_out = w.shape[-1]
    rows, cols = -(-h // 2), -(-width // 2)  # tiles; an odd side gets one padded output
    padded = jnp.pad(x, ((0, 0), (1, 2 * rows - h + 1), (1, 2 * cols - width + 1), (0, 0)))
    # G g G^T for every (input, output) channel pair: [4, 4, C_in, C_out]
    filters = jnp.einsum("ia,abco,jb->ijco", FILTER_TRANSFORM, w, FILTER_TRANSFORM)
    # B^T d B, a row of the tile at a time (strided views: XLA fuses each product's input)
    tile_rows = [padded[:, a:a + 2 * rows:2] for a in range(4)]
    products = []
    for i in range(4):
        mixed = _combination(INPUT_TRANSFORM[i], tile_rows)
        tile_cols = [mixed[:, :, b:b + 2 * cols:2] for b in range(4)]
        products.append([
            (_combination(INPUT_TRANSFORM[j], tile_cols).reshape(n * rows * cols, c_in)
             @ filters[i, j]).reshape(n, rows, cols, c_out) for j in range(4)])
    # A^T m A: the 2x2 outputs of each tile, interleaved back into the image
    halves = [[_combination(OUTPUT_TRANSFORM[p], [products[a][b] for a in range(4)])
               for b in range(4)] for p in range(2)]
    outputs = jnp.stack([jnp.stack([_combination(OUTPUT_TRANSFORM[q], halves[p])
                                    for q in range(2)], axis=3) for p in range(2)], axis=2)
    return outputs.reshape(n, 2 * rows, 2 * cols, c_out)[:, :h, :width]

