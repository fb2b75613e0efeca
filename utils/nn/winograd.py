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
swapped. Its weight gradient takes the same tiles where there are channels enough: the
gradient of G g G^T is the sum over the batch and the tiles of (B^T d B) * (A dY A^T), 16
matrix products [C_in, tiles] @ [tiles, C_out] against the plain convolution's 9 over four
times as many pixels, then G^T (...) G. Measured alone on the 2-core Zen 3 (128 images, the
plain weight gradient's time over this form's): 64->128 channels 1.10-1.28x (24x24 and
12x12), 128->128 1.16x (24x24) and 1.25-1.39x (12x12), 128->256 and 256->256 1.35-1.54x
(12x12 and 6x6); 64->64 0.78-1.01x and 32->32 or 32->64 0.8-0.9x, where writing and reading the transformed
tiles costs more than the products saved; so C_in * C_out >= 64 * 128. A step's values
equal the plain step's within float32 rounding, not bit for bit (same seed, same machine:
same bits, as always).
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
# The fewest channel pairs (C_in * C_out) the weight gradient takes the tiles' form on
# (measured: see the module's docstring); with fewer, the transformed tiles cost more than the
# products saved.
WEIGHT_GRADIENT_MIN_CHANNEL_PAIRS = 64 * 128


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
    its input gradient, by F(2x2, 3x3); its weight gradient by the same tiles where there are
    enough channels (``weight_gradient_chosen``), else the plain convolution's."""
    return _winograd(x, w)


def _conv3x3_fwd(x, w):
    return _winograd(x, w), (x, w)


def _conv3x3_bwd(residuals, g):
    x, w = residuals
    input_gradient = _winograd(g, cpu_kernels.input_gradient_filters(w))
    if weight_gradient_chosen(w):
        return input_gradient, weight_gradient(x, g)
    return input_gradient, cpu_kernels.conv_weight_gradient(x, g, (3, 3))


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)


def weight_gradient_chosen(w) -> bool:
    """Whether ``conv3x3``'s weight gradient for filters w takes the tiles' form: at least
    WEIGHT_GRADIENT_MIN_CHANNEL_PAIRS; FER_WINOGRAD_WEIGHTS=1 or 0 overrides (to measure)."""
    override = os.environ.get("FER_WINOGRAD_WEIGHTS")
    if override in ("0", "1"):
        return override == "1"
    return w.shape[2] * w.shape[3] >= WEIGHT_GRADIENT_MIN_CHANNEL_PAIRS


def _tiles(x):
    """(rows, cols) of 2x2 output tiles covering x's map; an odd side gets one padded output."""
    return -(-x.shape[1] // 2), -(-x.shape[2] // 2)


def _input_tiles(x, rows: int, cols: int) -> list:
    """B^T d B for every 4x4 tile d of the zero-padded x: [4][4] of [N * rows * cols, C_in],
    a row of the tile at a time (strided views: XLA fuses each product's input)."""
    n, h, width, c_in = x.shape
    padded = jnp.pad(x, ((0, 0), (1, 2 * rows - h + 1), (1, 2 * cols - width + 1), (0, 0)))
    tile_rows = [padded[:, a:a + 2 * rows:2] for a in range(4)]
    tiles = []
    for i in range(4):
        mixed = _combination(INPUT_TRANSFORM[i], tile_rows)
        tile_cols = [mixed[:, :, b:b + 2 * cols:2] for b in range(4)]
        tiles.append([_combination(INPUT_TRANSFORM[j], tile_cols).reshape(n * rows * cols, c_in)
                      for j in range(4)])
    return tiles


def _winograd(x, w):
    n, h, width, _ = x.shape
    c_out = w.shape[-1]
    rows, cols = _tiles(x)
    # G g G^T for every (input, output) channel pair: [4, 4, C_in, C_out]
    filters = jnp.einsum("ia,abco,jb->ijco", FILTER_TRANSFORM, w, FILTER_TRANSFORM)
    tiles = _input_tiles(x, rows, cols)
    products = [[(tiles[i][j] @ filters[i, j]).reshape(n, rows, cols, c_out) for j in range(4)]
                for i in range(4)]
    # A^T m A: the 2x2 outputs of each tile, interleaved back into the image
    halves = [[_combination(OUTPUT_TRANSFORM[p], [products[a][b] for a in range(4)])
               for b in range(4)] for p in range(2)]
    outputs = jnp.stack([jnp.stack([_combination(OUTPUT_TRANSFORM[q], halves[p])
                                    for q in range(2)], axis=3) for p in range(2)], axis=2)
    return outputs.reshape(n, 2 * rows, 2 * cols, c_out)[:, :h, :width]


def weight_gradient(x, g):
    """The weight gradient (HWIO) of ``conv3x3`` at input x and output gradient g, through the
    forward's tiles: G^T [sum over tiles of (B^T d B) (A dY A^T)] G, where dY is g's 2x2 block
    of the tile (zero past an odd side, whose outputs were cut off)."""
    n, h, width, c_out = g.shape
    rows, cols = _tiles(x)
    tiles = _input_tiles(x, rows, cols)
    padded = jnp.pad(g, ((0, 0), (0, 2 * rows - h), (0, 2 * cols - width), (0, 0)))
    block_rows = [padded[:, p::2] for p in range(2)]
    products = []
    for i in range(4):
        mixed = _combination(OUTPUT_TRANSFORM[:, i], block_rows)
        block_cols = [mixed[:, :, q::2] for q in range(2)]
        # summed over the batch and the tiles: [C_in, tiles] @ [tiles, C_out] for each position
        products.append([
            tiles[i][j].T @ _combination(OUTPUT_TRANSFORM[:, j], block_cols).reshape(-1, c_out)
            for j in range(4)])
    return jnp.einsum("ia,ijco,jb->abco", FILTER_TRANSFORM, jnp.stack(
        [jnp.stack(row) for row in products]), FILTER_TRANSFORM)
