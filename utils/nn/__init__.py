"""The hand-written layer beside ``utils.rna`` (the thesis's primitives): the layer contract,
what a network is and the registry its builders write to, the cost and error rate, the
compute dtype, and the XLA-CPU fast paths ``rna`` calls.

Beneath ``convnets/`` and ``mlp/``, which build the networks from it; it imports neither.
"""
