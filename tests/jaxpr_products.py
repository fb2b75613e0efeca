"""The convolutions and matrix products a jaxpr holds, at any depth (jit, custom derivatives,
control flow), for tests that check what a function computes."""
from __future__ import annotations

import jax.numpy as jnp
from jax.extend import core as jax_core


def products_and_operands(jaxpr) -> list:
    """Each conv and matmul in the jaxpr (and inside it) with the dtypes its operands had
    before any widening to float32 within the same jaxpr."""
    made_by = {out: eqn for eqn in jaxpr.eqns for out in eqn.outvars}

    def before_widening(var):
        eqn = made_by.get(var)
        if (eqn is not None and eqn.primitive.name == "convert_element_type"
                and var.aval.dtype == jnp.float32):
            return before_widening(eqn.invars[0])
        return var.aval.dtype

    found = [(eqn, {before_widening(v) for v in eqn.invars}) for eqn in jaxpr.eqns
             if eqn.primitive.name in ("conv_general_dilated", "dot_general")]
    for sub in jax_core.subjaxprs(jaxpr):
        found += products_and_operands(sub)
    return found
