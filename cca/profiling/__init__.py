"""Profiling of the context blocks: FLOPs (fvcore + exact criss-cross handles), peak training memory,
latency; measurements only (returned as data; :mod:`experiments.reports.efficiency` and table 5 render them).

* :func:`count_flops` ``(module, inputs) -> dict``: 2 x multiply-adds, backend-independent.
* :func:`peak_memory` ``(module, input_shape, method=...) -> dict``: forward + backward peak.
* :func:`latency` ``(module, input_shape, mode=...) -> dict``: median after warm-up.
* :func:`profile_block` ``(name, input_shape=(1, 512, 97, 97), recurrence=2, device="cpu") -> dict``;
  CLI ``python -m cca.profiling BLOCK``.
* :func:`network_increment` ``(block, recurrence, backbone="resnet50", input_shape=(1, 3, 769, 769)) -> dict``:
  what a block adds to the whole segmentation network, the paper's methodology; CLI
  ``python -m cca.profiling --network resnet50 BLOCK``.
* :mod:`cca.profiling.efficiency` (every block alone, scaling), :mod:`cca.profiling.variants` (non-local
  variants of 2018 for the memory investigation).
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
from cca.profiling.network import NETWORK_INPUT, build_network, network_increment

__all__ = [
    "FLOPS_CONVENTION",
    "PAPER_INPUT",
    "LiveTensorTracker",
    "NETWORK_INPUT",
    "block_names",
    "build_network",
    "build_block",
    "ca_map_macs",
    "ca_weight_macs",
    "count_flops",
    "criss_cross_positions",
    "latency",
    "modelled_criss_cross",
    "network_increment",
    "peak_memory",
    "profile_block",
]
