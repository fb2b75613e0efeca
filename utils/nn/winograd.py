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
swapped. Its weight gradient takes tiles too where there are channels enough: the gradient of
G g G^T is the sum over the batch and the tiles of (B^T d B) * (A dY A^T), one matrix product
[C_in, tiles] @ [tiles, C_out] per tile position, then G^T (...) G. With F(2x2, 3x3) that is
16 products against the plain convolution's 9 over four times as many pixels; with F(4x4, 3x3)
(6x6 tiles, section 4.2) 36 over 16 times as many: 4x fewer multiplications, and transformed
tiles 2.25x the map's size instead of 4x. Measured on the 2-core Zen 3 (128 images), the
weight gradient alone, the plain kernel's time over the form's: F(2x2) 64->128 channels
1.10-1.28x (24x24 and 12x12), 128->128 1.16-1.39x, 128->256 and 256->256 1.35-1.54x (12x12
and 6x6), 64->64 0.78-1.01x and 32-channel layers 0.8-0.9x; F(4x4) at 12x12 64->128 1.7x,
128->128 1.7x, at 24x24 1.16-1.18x, at 6x6 (tiles mostly padding) slower than F(2x2). In
whole training steps (paired rounds, against the plain weight gradient): F(2x2) alone S 1.02x,
V 1.07x, A 1.05x; with F(4x4) on the 12x12 maps S 1.06x, V 1.19x, A 1.11x; with F(4x4) on
24x24 maps too S 1.02x, V 1.10x, A 1.10x; at 40x40 crops (maps 20, 10, 5) F(2x2) alone about
even (V 0.985x and 1.029x), F(4x4) on the 10x10 maps 0.94x, on 20x20 0.90x. So F(4x4) on
12x12 maps with C_in * C_out >= 32 * 64, F(2x2) elsewhere with C_in * C_out >= 64 * 128, the
plain kernel otherwise. A step's values equal the plain step's within float32 rounding, not
bit for bit (same seed, same machine: same bits, as always).
"""
from __future__ import annotations

import dataclasses
import functools
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


@dataclasses.dataclass(frozen=True, eq=False)
class Tiles:
    """A Winograd form F(m x m, 3x3): (m + 2) x (m + 2) input tiles, m x m outputs each."""
    outputs: int  # m
    input_transform: np.ndarray  # B^T, (m + 2) x (m + 2)
    filter_transform: np.ndarray  # G, (m + 2) x 3
    output_transform: np.ndarray  # A^T, m x (m + 2)


F2X2 = Tiles(2, INPUT_TRANSFORM, FILTER_TRANSFORM, OUTPUT_TRANSFORM)
# F(4x4, 3x3) (Lavin and Gray, section 4.2; points 0, +-1, +-2): 36 products per 16 outputs
# (4x fewer than direct), transformed tiles 2.25x the map's size (F(2x2)'s: 4x), rounding
# about 5e-6 of the largest value (F(2x2)'s: 1e-6).
F4X4 = Tiles(
    4,
    np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
              [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float32),
    np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float32),
    np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
              [0, 1, -1, 8, -8, 1]], np.float32))
TILES = {tiles.outputs: tiles for tiles in (F2X2, F4X4)}


@dataclasses.dataclass(frozen=True)
class Layers:
    """The 3x3 convolutions a CPU kind takes the forward form for, as measured there."""
    min_channels: int  # in and out
    min_channel_pairs: int  # C_in * C_out
    min_side: int  # the map's height and width
    weight_tiles: bool  # whether the weight gradient takes its forms too (the rules below)

    def take(self, x, w) -> bool:
        _, height, width, _ = x.shape
        _, _, c_in, c_out = w.shape
        return (min(c_in, c_out) >= self.min_channels and c_in * c_out >= self.min_channel_pairs
                and min(height, width) >= self.min_side)


# The fewest channels, in and out, the form pays on anywhere (measured: see the module's
# docstring), and the CPU kinds measured: (vendor, family; None: every family) -> the layers
# taking it there; a kind not listed takes none. FER_WINOGRAD=1 or 0 overrides the choice (1:
# every layer of MIN_CHANNELS, to measure it on another kind). On the Zen 5 (family 26; paired
# whole steps, 2026-12-08) every form was slower for S, V and F (training 0.77-0.93x,
# inference 0.94-0.98x) and faster for A (inference 1.28x): only layers as wide as A's 12x12
# ones take it there.
MIN_CHANNELS = 64
EVERY_LAYER = Layers(MIN_CHANNELS, 0, 1, weight_tiles=True)
MEASURED_CPU_KINDS = {("AuthenticAMD", 25): EVERY_LAYER,  # Zen 3 and Zen 4
                      ("AuthenticAMD", 26): Layers(128, 128 * 256, 12, weight_tiles=False)}
# The weight gradient's forms (measured: see the module's docstring): F(4x4) on 12x12 maps with
# C_in * C_out >= 32 * 64, else F(2x2) with C_in * C_out >= 64 * 128, else the plain
# convolution's (fewer channels: the transformed tiles cost more than the products saved;
# F(4x4) on 24x24 maps was faster alone but slower in whole steps, as on 20x20 and 10x10 ones;
# on 6x6 its tiles are mostly padding).
WIDE_TILE_SIDES = (12,)
WIDE_TILE_MIN_CHANNEL_PAIRS = 32 * 64
WEIGHT_GRADIENT_MIN_CHANNEL_PAIRS = 64 * 128


def chosen(x, w) -> bool:
    """Whether ``rna.conv2d`` takes this form forward for x (NHWC) and w (HWIO) here."""
    layers = _layers_here(os.environ.get("FER_WINOGRAD"))
    return _eligible(x, w) and layers is not None and layers.take(x, w)


def weight_gradient_tiles(x, w) -> int:
    """The output tile side (4 or 2) of the form ``conv3x3``'s weight gradient takes for x
    (NHWC) and w (HWIO) on this machine; 0: the plain convolution's. FER_WINOGRAD_WEIGHTS=1
    or 0 overrides the CPU kind's choice (else FER_WINOGRAD does)."""
    _, _, c_in, c_out = w.shape
    layers = _layers_here(os.environ.get("FER_WINOGRAD_WEIGHTS", os.environ.get("FER_WINOGRAD")))
    if not _eligible(x, w) or layers is None or not layers.weight_tiles:
        return 0
    if (x.shape[1] in WIDE_TILE_SIDES and x.shape[2] in WIDE_TILE_SIDES
            and c_in * c_out >= WIDE_TILE_MIN_CHANNEL_PAIRS):
        return 4
    return 2 if c_in * c_out >= WEIGHT_GRADIENT_MIN_CHANNEL_PAIRS else 0


def _layers_here(override: str | None) -> Layers | None:
    """The layers taking the form on this machine, given an override ('0', '1' or None)."""
    if override in ("0", "1"):
        return EVERY_LAYER if override == "1" else None
    return MEASURED_CPU_KINDS.get(host_tuning.listed_kind(MEASURED_CPU_KINDS))


def _eligible(x, w) -> bool:
    return (w.shape[:2] == (3, 3) and x.dtype == jnp.float32
            and jax.default_backend() == "cpu")


def _combination(coefficients, terms):
    """sum of coefficient * term, skipping zeros and multiplying only where not +-1."""
    total = None
    for coefficient, term in zip(coefficients, terms):
        if coefficient == 0:
            continue
        term = term if coefficient == 1 else -term if coefficient == -1 else coefficient * term
        total = term if total is None else total + term
    return total


def conv3x3(x, w, forward_tiles: bool | None = None, weight_tiles: int | None = None,
            kept: tuple[int, int] | None = None):
    """'same' 3x3 cross-correlation of float32 NHWC x with HWIO w (``rna.conv2d``'s sum): by
    F(2x2, 3x3) forward and in its input gradient where ``forward_tiles`` (default: where
    ``chosen``), else XLA's convolution; its weight gradient by F(m x m, 3x3) with m =
    ``weight_tiles`` (4 or 2; default: ``weight_gradient_tiles``), 0: the plain one's.
    ``kept`` (rows, cols): only the outputs [:rows, :cols], the tiles covering those alone."""
    forward_tiles = chosen(x, w) if forward_tiles is None else forward_tiles
    weight_tiles = weight_gradient_tiles(x, w) if weight_tiles is None else weight_tiles
    kept = tuple(x.shape[1:3]) if kept is None else tuple(kept)
    return _conv3x3(x, w, forward_tiles, weight_tiles, kept)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv3x3(x, w, forward_tiles: bool, weight_tiles: int, kept: tuple[int, int]):
    if forward_tiles:
        return tiled_conv(x, w, F2X2, kept)
    return cpu_kernels.conv_same_float32(x, w)[:, :kept[0], :kept[1]]


def _conv3x3_fwd(x, w, forward_tiles, weight_tiles, kept):
    return _conv3x3(x, w, forward_tiles, weight_tiles, kept), (x, w)


def _conv3x3_bwd(forward_tiles, weight_tiles, kept, residuals, g):
    x, w = residuals
    # the outputs not kept have no cotangent
    g = jnp.pad(g, ((0, 0), (0, x.shape[1] - kept[0]), (0, x.shape[2] - kept[1]), (0, 0)))
    if forward_tiles:
        input_gradient = tiled_conv(g, cpu_kernels.input_gradient_filters(w), F2X2)
    else:
        input_gradient = cpu_kernels.conv_input_gradient(x, w, g)
    if weight_tiles:
        return input_gradient, weight_gradient(x, g, TILES[weight_tiles])
    return input_gradient, cpu_kernels.conv_weight_gradient(x, g, (3, 3))


_conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)


def _tile_counts(outputs: tuple[int, int], tiles: Tiles):
    """(rows, cols) of output tiles covering (rows, cols) outputs; a ragged side gets padded
    outputs."""
    m = tiles.outputs
    return -(-outputs[0] // m), -(-outputs[1] // m)


def _input_tiles(x, tiles: Tiles, counts: tuple[int, int]) -> list:
    """B^T d B for every input tile d of the zero-padded x, ``counts`` (rows, cols) of tiles
    from the top left: [m + 2][m + 2] of [N * rows * cols, C_in], a row of the tile at a time
    (strided views: XLA fuses each product's input)."""
    m, side = tiles.outputs, tiles.outputs + 2
    rows, cols = counts
    # the tiles read x's rows -1 .. m * rows (cols alike): cut what lies past, pad the rest
    x = x[:, :m * rows + 1, :m * cols + 1]
    n, h, width, c_in = x.shape
    padded = jnp.pad(x, ((0, 0), (1, m * rows - h + 1), (1, m * cols - width + 1), (0, 0)))
    tile_rows = [padded[:, a:a + m * rows:m] for a in range(side)]
    transformed = []
    for i in range(side):
        mixed = _combination(tiles.input_transform[i], tile_rows)
        tile_cols = [mixed[:, :, b:b + m * cols:m] for b in range(side)]
        transformed.append([_combination(tiles.input_transform[j], tile_cols)
                            .reshape(n * rows * cols, c_in) for j in range(side)])
    return transformed


def tiled_conv(x, w, tiles: Tiles = F2X2, kept: tuple[int, int] | None = None):
    """The 'same' 3x3 cross-correlation of NHWC x with HWIO w by these tiles; ``kept`` (rows,
    cols): its outputs [:rows, :cols] only, from the tiles that cover them (default: all)."""
    n = x.shape[0]
    h, width = kept or x.shape[1:3]
    c_out = w.shape[-1]
    m, side = tiles.outputs, tiles.outputs + 2
    rows, cols = _tile_counts((h, width), tiles)
    # G g G^T for every (input, output) channel pair: [m + 2, m + 2, C_in, C_out]
    g_transform = tiles.filter_transform
    filters = jnp.einsum("ia,abco,jb->ijco", g_transform, w, g_transform)
    transformed = _input_tiles(x, tiles, (rows, cols))
    products = [[(transformed[i][j] @ filters[i, j]).reshape(n, rows, cols, c_out)
                 for j in range(side)] for i in range(side)]
    # A^T m A: the m x m outputs of each tile, interleaved back into the image
    a_transform = tiles.output_transform
    halves = [[_combination(a_transform[p], [products[a][b] for a in range(side)])
               for b in range(side)] for p in range(m)]
    outputs = jnp.stack([jnp.stack([_combination(a_transform[q], halves[p])
                                    for q in range(m)], axis=3) for p in range(m)], axis=2)
    return outputs.reshape(n, m * rows, m * cols, c_out)[:, :h, :width]


def weight_gradient(x, g, tiles: Tiles = F2X2):
    """The weight gradient (HWIO) of the 'same' 3x3 convolution at input x and output gradient
    g, through the forward's tiles: G^T [sum over tiles of (B^T d B) (A dY A^T)] G, where dY is
    g's m x m block of the tile (zero past a ragged side, whose outputs were cut off)."""
    n, h, width, c_out = g.shape
    m, side = tiles.outputs, tiles.outputs + 2
    rows, cols = _tile_counts((h, width), tiles)
    transformed = _input_tiles(x, tiles, (rows, cols))
    padded = jnp.pad(g, ((0, 0), (0, m * rows - h), (0, m * cols - width), (0, 0)))
    block_rows = [padded[:, p::m] for p in range(m)]
    a_transform = tiles.output_transform
    products = []
    for i in range(side):
        mixed = _combination(a_transform[:, i], block_rows)
        block_cols = [mixed[:, :, q::m] for q in range(m)]
        # summed over the batch and the tiles: [C_in, tiles] @ [tiles, C_out] for each position
        products.append([
            transformed[i][j].T @ _combination(a_transform[:, j], block_cols).reshape(-1, c_out)
            for j in range(side)])
    g_transform = tiles.filter_transform
    return jnp.einsum("ia,ijco,jb->abco", g_transform, jnp.stack(
        [jnp.stack(row) for row in products]), g_transform)
