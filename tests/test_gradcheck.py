"""A float64 finite-difference check of gradients through every layer kind."""
import jax
import jax.numpy as jnp
import numpy as np

from convnets.networks import Conv, Pool, Residual, build_convnet
from utils import rna
from utils.nn.losses import negative_log_likelihood


def test_gradients_match_central_differences_in_float64():
    with jax.enable_x64(True):
        # conv+BN+noise+pool+dropout, a zero-padded residual block, a projected one,
        # a standalone pooling, a BN hidden layer with noise and dropout, softmax output.
        nets = [
            build_convnet("grad", [Conv(3), Pool(), Residual(4), Pool(), Residual(4)],
                          im_dim=[8, 8], n_hidden=[5], activation="tanh", gaussian_std=0.1,
                          p_drop=0.3, p_dropConv=[0.2, 0.1, 0.2, 0.0, 0.1]),
            build_convnet("grad_proj", [Conv(2, kernel=5), Residual(3)], im_dim=[4, 4],
                          n_hidden=[4], activation="sigmoid", batch_norm=False,
                          projection_shortcut=True, p_drop=0.2, p_dropConv=[0.1, 0.0, 0.2]),
        ]
        rng = np.random.default_rng(0)
        for net in nets:
            params, state = net.init(jax.random.key(0), dtype=jnp.float64)
            h, w, _ = net.input_shape
            x = jnp.asarray(rng.normal(size=(6, h, w, 1)))
            y = jnp.asarray(rng.integers(0, 7, 6))
            key = jax.random.key(3)  # fixed dropout masks and noise: a deterministic function

            def cost(p):
                logits, _ = net.apply(p, state, x, train=True, key=key)
                return negative_log_likelihood(logits, y) + rna.l1_l2_penalty(p, 1e-3, 1e-2)

            cost = jax.jit(cost)
            grads = jax.jit(jax.grad(cost))(params)
            leaves, treedef = jax.tree_util.tree_flatten(params)
            for trial in range(3):
                direction = [jnp.asarray(rng.normal(size=leaf.shape)) for leaf in leaves]
                v = jax.tree_util.tree_unflatten(treedef, direction)
                eps = 1e-6
                plus = jax.tree_util.tree_map(lambda p, d: p + eps * d, params, v)
                minus = jax.tree_util.tree_map(lambda p, d: p - eps * d, params, v)
                numeric = (cost(plus) - cost(minus)) / (2 * eps)
                analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree_util.tree_leaves(grads),
                                                               direction))
                assert analytic.dtype == jnp.float64
                np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)
            # Every parameter receives gradient (nothing is disconnected).
            assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree_util.tree_leaves(grads))
