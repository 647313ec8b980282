"""The `transformer` dialect: op classes and builder functions generated from dialect/TransformerOps.td.

Builders infer result types, e.g. ``transformer.linear(x, w, bias=b)``; parsed ops come back as these
classes (``LinearOp``, ``AttentionOp``, ...) because ``import kiln`` registers this package as a dialect
search prefix.
"""

from ._transformer_ops_gen import *  # noqa: F401,F403
from ._transformer_ops_gen import _Dialect  # noqa: F401
