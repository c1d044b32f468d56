"""cca: criss-cross attention (CCNet) operators, models and the paper's experiments."""

from cca.ops import (
    ca_map,
    ca_weight,
    criss_cross_attention,
    criss_cross_attention_3d,
    criss_cross_attention_map,
    criss_cross_attention_map_3d,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "ca_map",
    "ca_weight",
    "criss_cross_attention",
    "criss_cross_attention_3d",
    "criss_cross_attention_map",
    "criss_cross_attention_map_3d",
]
