"""Peak memory of one training step (forward + backward) of a block on its own.

Methods (``memory_method`` in every result says which produced the number):

* ``"cuda_max_memory_allocated"``: a real run on the GPU, ``torch.cuda.max_memory_allocated``
  (peak statistics reset first), with the process's memory as NVML sees it beside it
  (``nvml_process_memory_mib``: CUDA context + the caching allocator's reserve, so larger).
* ``"live_tensor_tracker(cpu)"``: a real run on the CPU under :class:`LiveTensorTracker`.
* ``"fake_tensor_tracker(cpu)"``: the same tracker over ``FakeTensorMode`` tensors: shapes and
  storages only, no data, so CUDA-sized runs (a 256 x 256 non-local block) need no memory.
* ``"fake_tensor_tracker(cuda-equivalent)"``: as above, each storage rounded up to the CUDA
  caching allocator's 512-byte blocks (what ``max_memory_allocated`` counts). The fake run uses
  CPU kernels: backward on a fake ``"cuda"`` device needs a CUDA context (autograd's device
  threads), which a machine without a GPU has not.
* ``"fake_tensor_tracker(2 MiB segments)"`` (``method="fake_cuda_segments"``): each storage rounded
  up to 2 MiB, the granularity of the allocator's segments for large blocks: a stand-in for the
  reserve beyond the allocated bytes, used to bound the model's error (not a GPU measurement).

The tracker is allocator-independent: it sums the bytes of the storages that tensors returned by
operators hold, from the op that creates each storage until the storage is freed (weak-reference
callbacks), and keeps the maximum. It does not see scratch memory an operator allocates and frees
inside its kernel (e.g. a convolution's workspace) nor allocator fragmentation.

``step="inference"`` measures a forward pass alone instead (eval mode, ``torch.no_grad()``).

What is included (training step): parameters and buffers, the input (``requires_grad=True``: the block sits inside
a network), activations saved for backward and temporaries, the output and its gradient (ones, as
from a loss above), parameter gradients and the input gradient. BatchNorm layers run with running
statistics (a batch of one cannot give batch statistics for 1 x 1 pooled bins); everything else in
training mode.
"""

from __future__ import annotations

import contextlib
import math
import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

from cca.profiling.flops import modelled_criss_cross

__all__ = [
    "CUDA_BLOCK_BYTES",
    "CUDA_SEGMENT_BYTES",
    "MEMORY_INCLUDES",
    "MEMORY_METHODS",
    "MEMORY_STEPS",
    "LiveTensorTracker",
    "peak_memory",
    "set_training_mode",
    "training_step",
]

MiB = 2**20
CUDA_BLOCK_BYTES = 512  # the CUDA caching allocator rounds every block up to a multiple of 512 bytes
CUDA_SEGMENT_BYTES = 2 * MiB  # the caching allocator's segment granularity for large blocks
MEMORY_METHODS = ("auto", "fake", "fake_cuda", "fake_cuda_segments", "live", "cuda")
_FAKE_ROUNDING = {"fake": 1, "fake_cuda": CUDA_BLOCK_BYTES, "fake_cuda_segments": CUDA_SEGMENT_BYTES}
_FAKE_NAMES = {
    "fake": "fake_tensor_tracker(cpu)",
    "fake_cuda": "fake_tensor_tracker(cuda-equivalent)",
    "fake_cuda_segments": "fake_tensor_tracker(2 MiB segments)",
}
MEMORY_STEPS = ("training", "inference")
MEMORY_INCLUDES = (
    "parameters + buffers + input (requires_grad) + activations saved for backward + temporaries + output "
    "and its gradient + parameter gradients + input gradient; one forward + backward, BatchNorm on running stats"
)
INFERENCE_INCLUDES = "parameters + buffers + input + forward activations and temporaries; eval mode, torch.no_grad()"


@dataclass
class _Block:
    nbytes: int
    category: str
    alive: bool = True


class LiveTensorTracker(TorchDispatchMode):
    """Peak bytes of live tensor storages while the mode is active.

    Args:
        rounding: round each storage up to a multiple of this many bytes (1: exact bytes;
            :data:`CUDA_BLOCK_BYTES` to mimic the CUDA caching allocator).

    Use :meth:`track_external` for tensors that exist before (parameters, input), then run the
    work inside ``with tracker:``; :meth:`label` re-categorises storages afterwards (gradients).
    """

    def __init__(self, rounding: int = 1) -> None:
        super().__init__()
        if not isinstance(rounding, int) or rounding < 1:
            raise ValueError(f"rounding must be a positive int (bytes), got rounding={rounding!r}")
        self.rounding = rounding
        self._storages = WeakIdKeyDictionary()  # storage -> block id
        self._blocks: dict[int, _Block] = {}
        self._refs: dict[int, weakref.ref] = {}
        self.current_bytes = 0
        self.peak_bytes = 0
        self._peak_ids: tuple[int, ...] = ()

    def _size(self, storage: torch.UntypedStorage) -> int:
        nbytes = storage.nbytes()
        if nbytes == 0 or self.rounding == 1:
            return nbytes
        return math.ceil(nbytes / self.rounding) * self.rounding

    def _freed(self, block_id: int, _ref: weakref.ref) -> None:
        block = self._blocks[block_id]
        if block.alive:
            block.alive = False
            self.current_bytes -= block.nbytes
        self._refs.pop(block_id, None)

    def _track(self, tensor: Tensor, category: str) -> None:
        try:
            storage = tensor.untyped_storage()
        except (RuntimeError, NotImplementedError):  # sparse, nested, ...: no plain storage
            return
        block_id = self._storages.get(storage)
        if block_id is not None:
            block = self._blocks[block_id]
            size = self._size(storage)
            if block.alive and size != block.nbytes:  # resized in place
                self.current_bytes += size - block.nbytes
                block.nbytes = size
            return
        block_id = len(self._blocks)
        self._blocks[block_id] = _Block(self._size(storage), category)
        self._storages[storage] = block_id
        self._refs[block_id] = weakref.ref(storage, lambda ref, i=block_id: self._freed(i, ref))
        self.current_bytes += self._blocks[block_id].nbytes

    def _update_peak(self) -> None:
        if self.current_bytes > self.peak_bytes:
            self.peak_bytes = self.current_bytes
            self._peak_ids = tuple(i for i, b in self._blocks.items() if b.alive)

    def track_external(self, *tensors: Tensor, category: str) -> None:
        """Count tensors created before the tracker (they are live from the start)."""
        for tensor in tensors:
            if not isinstance(tensor, Tensor):
                raise TypeError(f"track_external takes tensors, got {type(tensor).__name__}")
            self._track(tensor, category)
        self._update_peak()

    def label(self, tensors: Sequence[Tensor | None], category: str) -> None:
        """Re-categorise the storages of ``tensors`` (e.g. gradients once backward has run)."""
        for tensor in tensors:
            if tensor is None:
                continue
            block_id = self._storages.get(tensor.untyped_storage())
            if block_id is not None:
                self._blocks[block_id].category = category

    def peak_breakdown(self) -> dict[str, int]:
        """Bytes per category of the storages live at the peak."""
        totals: dict[str, int] = {}
        for block_id in self._peak_ids:
            block = self._blocks[block_id]
            totals[block.category] = totals.get(block.category, 0) + block.nbytes
        return totals

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, Tensor):
                self._track(leaf, "activations_and_temporaries")
        self._update_peak()
        return out


def set_training_mode(module: nn.Module) -> nn.Module:
    """Training mode with BatchNorm on running statistics (see the module docstring)."""
    module.train()
    for child in module.modules():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            child.eval()
    return module


def training_step(module: nn.Module, state: dict[str, Tensor], x: Tensor, training: bool = True) -> Tensor:
    """``module`` with ``state`` (parameters + buffers): forward, then (``training``) backward of ones;
    without ``training`` the forward runs under ``torch.no_grad()``. Returns the output."""
    with torch.set_grad_enabled(training):
        out = torch.func.functional_call(module, state, (x,))
    if not isinstance(out, Tensor):
        raise TypeError(f"the block must return a Tensor, got {type(out).__name__}")
    if training:
        out.backward(torch.ones_like(out))
    return out


def _state(module: nn.Module, convert) -> tuple[dict[str, Tensor], list[Tensor], list[Tensor]]:
    params = {name: convert(p).detach().requires_grad_(p.requires_grad) for name, p in module.named_parameters()}
    buffers = {name: convert(b) for name, b in module.named_buffers()}
    return {**params, **buffers}, list(params.values()), list(buffers.values())


def _run_tracked(module, state, params, buffers, x, rounding: int, training: bool) -> dict:
    tracker = LiveTensorTracker(rounding)
    tracker.track_external(*params, category="parameters")
    tracker.track_external(*buffers, category="buffers")
    tracker.track_external(x, category="input")
    with tracker:
        out = training_step(module, state, x, training)
    tracker.label([p.grad for p in params], "parameter_gradients")
    tracker.label([x.grad], "input_gradient")
    del out
    return {
        "peak_memory_bytes": tracker.peak_bytes,
        "peak_memory_mib": tracker.peak_bytes / MiB,
        "memory_breakdown_mib": {k: v / MiB for k, v in sorted(tracker.peak_breakdown().items())},
    }


def _nvml_process_memory_mib(device_index: int) -> float | None:
    """This process's memory on the GPU per NVML (None when NVML does not list it)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid == os.getpid() and proc.usedGpuMemory is not None:
                    return proc.usedGpuMemory / MiB
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # NVML missing or no permission (containers): report None, never fail
        return None
    return None


def _peak_cuda(module: nn.Module, input_shape: Sequence[int], dtype: torch.dtype, training: bool) -> dict:
    device = torch.device("cuda", torch.cuda.current_device())
    module = module.to(device)
    state, params, buffers = _state(module, lambda t: t)
    x = torch.randn(tuple(input_shape), dtype=dtype, device=device, requires_grad=training)
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    reserved_before = torch.cuda.memory_reserved(device)
    tracked = _run_tracked(module, state, params, buffers, x, CUDA_BLOCK_BYTES, training)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    reserved_peak = torch.cuda.max_memory_reserved(device)
    external = sum(
        math.ceil(t.untyped_storage().nbytes() / CUDA_BLOCK_BYTES) * CUDA_BLOCK_BYTES for t in [*params, *buffers, x]
    )
    # the block's own peak: what was allocated before that is not its parameters/buffers/input is left out
    own_peak = peak - before + external
    return {
        "peak_memory_bytes": own_peak,
        "peak_memory_mib": own_peak / MiB,
        "memory_breakdown_mib": tracked["memory_breakdown_mib"],
        "tracker_peak_memory_mib": tracked["peak_memory_mib"],
        "nvml_process_memory_mib": _nvml_process_memory_mib(device.index),
        # the caching allocator's reserve (what nvidia-smi sees, less the CUDA context), same accounting
        "reserved_memory_mib": (reserved_peak - reserved_before + external) / MiB,
        "memory_device": torch.cuda.get_device_name(device),
    }


def peak_memory(
    module: nn.Module,
    input_shape: Sequence[int],
    *,
    method: str = "auto",
    dtype: torch.dtype = torch.float32,
    criss_cross: str = "op",
    step: str = "training",
) -> dict:
    """Peak memory of one forward + backward of ``module`` on an input of ``input_shape``.

    Args:
        module: the block (on CPU; ``method="cuda"`` moves it to the GPU).
        input_shape: e.g. ``(N, C, H, W)``.
        method: ``"fake"`` (default for ``"auto"`` without a GPU), ``"fake_cuda"``, ``"fake_cuda_segments"``, ``"live"``
            or ``"cuda"`` (``"auto"`` with a GPU); see the module docstring.
        criss_cross: ``"op"``: the criss-cross attention allocates as the ``cca`` custom ops do
            (outputs + saved inputs), whatever the backend; ``"backend"``: as the active backend
            runs it (the pure-PyTorch reference allocates more).
        step: ``"training"`` (forward + backward, the default) or ``"inference"`` (eval mode,
            forward under ``torch.no_grad()``: parameters + buffers + input + forward temporaries).

    Returns:
        dict with ``peak_memory_mib``, ``peak_memory_bytes``, ``memory_method``, ``memory_includes``,
        ``memory_breakdown_mib`` (per category, at the peak) and, on CUDA, the NVML figure.
    """
    if method not in MEMORY_METHODS:
        raise ValueError(f"method must be one of {MEMORY_METHODS}, got method={method!r}")
    if criss_cross not in ("op", "backend"):
        raise ValueError(f"criss_cross must be 'op' or 'backend', got criss_cross={criss_cross!r}")
    if step not in MEMORY_STEPS:
        raise ValueError(f"step must be one of {MEMORY_STEPS}, got step={step!r}")
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    training = step == "training"
    shape = tuple(int(s) for s in input_shape)
    if method == "auto":
        method = "cuda" if torch.cuda.is_available() else "fake"
    if method == "cuda" and not torch.cuda.is_available():
        raise ValueError("method='cuda' needs a GPU but torch.cuda.is_available() is False; use 'fake_cuda'")
    if training:
        set_training_mode(module)
    else:
        module.eval()
    routing = modelled_criss_cross() if criss_cross == "op" else contextlib.nullcontext()
    with routing:
        if method == "cuda":
            result = _peak_cuda(module, shape, dtype, training)
            name = "cuda_max_memory_allocated"
        elif method == "live":
            state, params, buffers = _state(module, lambda t: t)
            x = torch.randn(shape, dtype=dtype, requires_grad=training)
            result = _run_tracked(module, state, params, buffers, x, 1, training)
            name = "live_tensor_tracker(cpu)"
        else:
            result = _fake_run(module, shape, dtype, _FAKE_ROUNDING[method], training)
            name = _FAKE_NAMES[method]
    includes = MEMORY_INCLUDES if training else INFERENCE_INCLUDES
    return {
        **result,
        "memory_method": name,
        "memory_includes": includes,
        "memory_step": step,
        "criss_cross_model": criss_cross,
    }


def _fake_run(module: nn.Module, shape: tuple[int, ...], dtype: torch.dtype, rounding: int, training: bool) -> dict:
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        state, params, buffers = _state(module, mode.from_tensor)
        x = torch.empty(shape, dtype=dtype, requires_grad=training)
        return _run_tracked(module, state, params, buffers, x, rounding, training)
