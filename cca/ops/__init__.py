"""The criss-cross attention operator: compiled kernels (``csrc/``) and a pure-PyTorch reference."""

from cca.ops.criss_cross import (
    ca_map,
    ca_weight,
    criss_cross_attention,
    criss_cross_attention_3d,
    criss_cross_attention_map,
    criss_cross_attention_map_3d,
    use_extension,
)

__all__ = [
    "ca_map",
    "ca_weight",
    "criss_cross_attention",
    "criss_cross_attention_3d",
    "criss_cross_attention_map",
    "criss_cross_attention_map_3d",
    "use_extension",
]
