"""FLOPs per image of a network, counted from its architecture (the jaxpr of its forward pass).

Convention (the usual one for conv nets):
- 2 FLOPs per multiply-add, counted in the matrix products only: convolutions and dense
  layers (``conv_general_dilated`` and ``dot_general`` in the jaxpr, at any depth). Batch norm,
  activations, pooling, dropout, the softmax and the optimiser update are not counted: a few
  operations per value, well under 1 % of a conv net's total.
- ``forward``: one image through the network in test mode (inference).
- ``train``: the forward pass plus, for every product, the product giving the gradient of each
  operand that depends on the parameters: the weights' gradient always, the input's gradient
  unless the input is the image itself (nothing needs it). Each has as many multiply-adds as
  the forward product, so ``train`` is 3x ``forward``, a little less for the first layer.
- Padding is counted as computed ('same' convolutions do the full k*k window at the border).
- Counted on the plain forms (``rna.plain_forms``): the architecture's sums, not the fewer
  products of the CPU's forms (Winograd's tiles; at inference, no outputs where a pooling drops
  a ragged border), so that a GFLOP/s figure is comparable with a peer's.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.extend import core as jax_core

from utils import rna


class FlopCount(NamedTuple):
    forward: int  # per image, inference
    train: int  # per image, forward + backward


def network_flops(network) -> FlopCount:
    """FLOPs per image of ``network`` (a ``utils.models.networks.Network``) at its input size."""
    params, state = jax.eval_shape(network.init, jax.random.key(0))
    image = jax.ShapeDtypeStruct((1, *network.input_shape), jnp.float32)
    with rna.plain_forms():  # every product as the architecture has it (see above)
        closed = jax.make_jaxpr(lambda p, s, x: network.apply(p, s, x, train=False)[0])(
            params, state, image)
    n_params = len(jax.tree_util.tree_leaves(params))
    n_state = len(jax.tree_util.tree_leaves(state))
    depends = [True] * n_params + [False] * (n_state + 1)
    forward, train, _ = _count(closed.jaxpr, depends)
    return FlopCount(forward=2 * forward, train=2 * train)


def product_macs(eqn) -> int:
    """Multiply-adds of one conv_general_dilated or dot_general equation (0 for others)."""
    out_size = math.prod(eqn.outvars[0].aval.shape)
    if eqn.primitive.name == "conv_general_dilated":
        rhs_shape = eqn.invars[1].aval.shape
        rhs_spec = eqn.params["dimension_numbers"].rhs_spec  # (out, in, *spatial)
        window = math.prod(rhs_shape[d] for d in rhs_spec[2:])
        return out_size * rhs_shape[rhs_spec[1]] * window
    if eqn.primitive.name == "dot_general":
        (lhs_contracting, _), _ = eqn.params["dimension_numbers"]
        lhs_shape = eqn.invars[0].aval.shape
        return out_size * math.prod(lhs_shape[d] for d in lhs_contracting)
    return 0


def _count(jaxpr, depends: list[bool]) -> tuple[int, int, list[bool]]:
    """(forward MACs, train MACs, whether each output depends on the parameters)."""
    dep = {var: d for var, d in zip(jaxpr.invars, depends)}

    def depends_on_params(atom) -> bool:
        return not isinstance(atom, jax_core.Literal) and dep.get(atom, False)

    forward = train = 0
    for eqn in jaxpr.eqns:
        inputs = [depends_on_params(v) for v in eqn.invars]
        macs = product_macs(eqn)
        if macs:
            forward += macs
            train += macs * (1 + sum(inputs[:2]))
            outputs = [any(inputs)] * len(eqn.outvars)
        else:
            sub_forward, sub_train, outputs = _count_inner(eqn, inputs)
            forward += sub_forward
            train += sub_train
        dep.update(zip(eqn.outvars, outputs))
    return forward, train, [depends_on_params(v) for v in jaxpr.outvars]


def _count_inner(eqn, inputs: list[bool]) -> tuple[int, int, list[bool]]:
    """Products inside an equation's sub-jaxprs (jit, custom derivatives, control flow)."""
    params = eqn.params
    if eqn.primitive.name == "cond":  # branches take the operands after the index
        counts = [_count(branch.jaxpr, inputs[1:]) for branch in params["branches"]]
        forward, train, _ = max(counts, key=lambda c: c[1])
        return forward, train, [any(c[2][i] for c in counts) for i in range(len(eqn.outvars))]
    inner = [p for p in params.values() if isinstance(p, (jax_core.ClosedJaxpr, jax_core.Jaxpr))]
    if not inner:
        return 0, 0, [any(inputs)] * len(eqn.outvars)
    sub = inner[0].jaxpr if isinstance(inner[0], jax_core.ClosedJaxpr) else inner[0]
    if len(sub.invars) != len(inputs):  # e.g. a while loop's body: inputs not one to one
        sub_inputs = [any(inputs)] * len(sub.invars)
    else:
        sub_inputs = inputs
    forward, train, outputs = _count(sub, sub_inputs)
    repeats = params.get("length", 1) if eqn.primitive.name == "scan" else 1
    if len(outputs) != len(eqn.outvars):
        outputs = [any(inputs)] * len(eqn.outvars)
    return forward * repeats, train * repeats, outputs
