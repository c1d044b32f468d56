"""Profiling of the context blocks: FLOPs (fvcore + exact criss-cross handles), peak training memory,
latency, and the paper's efficiency table (``python -m cca.profiling.report``).

* :func:`count_flops` ``(module, inputs) -> dict``: 2 x multiply-adds, backend-independent.
* :func:`peak_memory` ``(module, input_shape, method=...) -> dict``: forward + backward peak.
* :func:`latency` ``(module, input_shape, mode=...) -> dict``: median after warm-up.
* :func:`profile_block` ``(name, input_shape=(1, 512, 97, 97), recurrence=2, device="cpu") -> dict``;
  CLI ``python -m cca.profile BLOCK``.
"""

from cca.profiling.blocks import PAPER_INPUT, block_names, build_block, profile_block
from cca.profiling.flops import (
    FLOPS_CONVENTION,
    ca_map_macs,
    ca_weight_macs,
    count_flops,
    criss_cross_positions,
    modelled_criss_cross,
)
from cca.profiling.latency import latency
from cca.profiling.memory import LiveTensorTracker, peak_memory

__all__ = [
    "FLOPS_CONVENTION",
    "PAPER_INPUT",
    "LiveTensorTracker",
    "block_names",
    "build_block",
    "ca_map_macs",
    "ca_weight_macs",
    "count_flops",
    "criss_cross_positions",
    "latency",
    "modelled_criss_cross",
    "peak_memory",
    "profile_block",
]
