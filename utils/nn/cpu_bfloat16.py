"""bfloat16 on CPU: which conv layers compute in bfloat16, and the bfloat16 convolution.

XLA's CPU convolutions widen bfloat16 to float32 inside their loops and ran slower than
float32 ones (48x48, 32 channels, batch 128: 28.8 ms against 23.4). Products of bfloat16
values are exact in float32, so the same sums (in float32, as on every path) come from float32
convolutions of the widened values, or, where the CPU has bfloat16 matrix instructions, from
one bfloat16 matrix product per tap of the window: YNNPACK's bfloat16 matmul outruns the
float32 conv once the product's contraction is wide (measured on a Sapphire Rapids, batch 128:
12x12x128 -> 128 forward 15.7 ms against 19.5, input gradient 12.7 against 19.3; 6x6x256 ->
256: 6.8 and 6.5 against 18.6 and 19.7; with 64 input channels it was slower). The weight
gradient stays a float32 convolution (the taps' products reduce over the whole batch, where
YNN's matmul ran at half the conv's speed) and reaches the float32 weights without passing
through bfloat16.

A conv layer whose convolution has no such product on this CPU (fewer than 128 channels in or
out, or no bfloat16 matmul kernels) gains nothing from bfloat16 values: XLA's CPU backend
computes bfloat16 elementwise work (batch norm, pooling, activation, dropout) through
conversions too. Such a layer computes in float32, from its bfloat16 input widened, and hands
on its output in bfloat16 (``float32_layer``): on the 2-core Zen 5, paired against float32,
bfloat16 training steps went from 0.87-1.00x to 0.98-1.03x (S, V, A) and S's and A's inference
from 0.44x and 0.54x to 0.80x and 0.83x (README, Benchmark).
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from utils.nn import precision
from utils.nn.cpu_kernels import conv_same_float32, input_gradient_filters, same_taps

TAP_MATMUL_MIN_CHANNELS = 128


def float32_layer(x, w) -> bool:
    """Whether a conv layer with HWIO weights w, given bfloat16 x on a CPU, computes in
    float32: its convolution's forward and input gradient (input channels, output channels)
    are not both bfloat16 matrix products on this CPU (``bfloat16_conv``)."""
    if not precision.bfloat16_on_cpu(x):
        return False
    return not (precision.bfloat16_matmul_convs()
                and min(w.shape[2], w.shape[3]) >= TAP_MATMUL_MIN_CHANNELS)


def tap_matmul_conv(x, w):
    """The same conv as one matrix product per tap of the window, each shifted view of x (in
    its dtype) times that tap's weights, summed in float32; returned in x's dtype."""
    kh, kw, c_in, c_out = w.shape
    taps = w.astype(x.dtype).reshape(kh * kw, c_in, c_out)
    y = None
    for k, view in enumerate(same_taps(x, kh, kw)):
        term = jnp.matmul(view.reshape(-1, c_in), taps[k], preferred_element_type=jnp.float32)
        y = term if y is None else y + term
    return y.reshape(*x.shape[:3], c_out).astype(x.dtype)


def _bfloat16_conv_forward(x, w, tap_matmuls: bool):
    if tap_matmuls and w.shape[2] >= TAP_MATMUL_MIN_CHANNELS:
        return tap_matmul_conv(x, w)
    return conv_same_float32(x, w).astype(x.dtype)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def bfloat16_conv(x, w, tap_matmuls: bool):
    """'same' cross-correlation of bfloat16 NHWC x with HWIO w (float32 weights, used as
    bfloat16), summed in float32, returned in bfloat16; ``tap_matmuls``: wide convolutions as
    bfloat16 matrix products (``precision.bfloat16_matmul_convs``)."""
    return _bfloat16_conv_forward(x, w.astype(x.dtype), tap_matmuls)


def _bfloat16_conv_fwd(x, w, tap_matmuls):
    return bfloat16_conv(x, w, tap_matmuls), (x, w)


def _bfloat16_conv_bwd(tap_matmuls, residuals, g):
    x, w = residuals
    kh, kw = w.shape[:2]
    low = w.astype(x.dtype)
    if kh % 2 and kw % 2:  # an odd window's 'same' pads evenly
        dx = _bfloat16_conv_forward(g, input_gradient_filters(low), tap_matmuls)
    else:
        dx = jax.vjp(lambda x32: conv_same_float32(x32, low), x.astype(jnp.float32))[1](
            g.astype(jnp.float32))[0].astype(x.dtype)
    dw = jax.vjp(lambda w32: conv_same_float32(x, w32), low.astype(jnp.float32))[1](
        g.astype(jnp.float32))[0]
    return dx, dw.astype(w.dtype)


bfloat16_conv.defvjp(_bfloat16_conv_fwd, _bfloat16_conv_bwd)
