"""``nox -s triton_compile``: compile the fused Triton kernels for sm_80 and sm_90 without a GPU.

Uses the tiles and launch options the wrapper itself chooses (``cca.ops.triton_kernels``) at the
paper's channels (C' = 64, C = 512) for float32 (exact and TF32), float16 and bfloat16, and prints per
kernel and pass the registers per thread, the stack (register spills) and the shared memory, read
from the cubin with Triton's bundled ``cuobjdump``. Fails when a kernel does not compile or needs
more shared memory than the architecture has. This checks the GPU lowering (tensor-core dot shapes,
layouts, resources); only a GPU can time the kernels or run them.

    python -m experiments.triton_compile [--arch 80 90] [--dtype float32 tf32 float16 bfloat16]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED_LIMIT_BYTES = {80: 166912, 86: 101376, 89: 101376, 90: 232448}  # per block, opt-in maximum
DTYPES = {"float32": ("fp32", False), "tf32": ("fp32", True), "float16": ("fp16", False), "bfloat16": ("bf16", False)}
FLOAT32_POINTERS = {"lse_row_ptr", "lse_ptr", "delta_ptr", "partial_ptr"}


def _resources(cubin: bytes) -> dict[str, int]:
    """``REG``, ``STACK`` and ``SHARED`` of a cubin (``cuobjdump -res-usage``)."""
    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as handle:
        handle.write(cubin)
    try:
        text = subprocess.run([str(tool), "-res-usage", handle.name], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(handle.name)
    return {key: int(value) for key, value in re.findall(r"(REG|STACK|SHARED):(\d+)", text)}


def _compile(kernel, element: str, constants: dict, options: dict, arch: int):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = {}
    for name in kernel.arg_names:
        if name in constants:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = "*fp32" if name in FLOAT32_POINTERS else f"*{element}"
        else:
            signature[name] = "i32"
    source = ASTSource(fn=kernel, signature=signature, constexprs=constants)
    return triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)


def _cases(dtype_name: str):
    """``(pass, kernel, constants, options)`` of every launch the wrapper makes for this dtype."""
    import torch

    from cca.ops import _triton_bwd, _triton_fwd, triton_kernels

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[DTYPES[dtype_name][0]]
    torch.backends.cuda.matmul.allow_tf32 = DTYPES[dtype_name][1]
    launch = triton_kernels._launch_options(dtype, False)
    yield "-", _triton_bwd.delta_kernel, {"BP": 64, "BC": 16}, {}
    for column in (False, True):
        blocks = triton_kernels._blocks(column, 64, dtype, False)
        options = {key: blocks.pop(key) for key in ("num_warps", "num_stages")}
        name = "column" if column else "row"
        yield name, _triton_fwd.line_attention_fwd, {**blocks, **launch, "MERGE": column}, options
        for kernel in (_triton_bwd.line_dq, _triton_bwd.line_dk, _triton_bwd.line_dv):
            yield name, kernel, {**blocks, **launch, "ACCUMULATE": column}, options


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.triton_compile", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, nargs="+", default=[80, 90], choices=sorted(SHARED_LIMIT_BYTES))
    parser.add_argument("--dtype", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        parser.error("unset TRITON_INTERPRET: the interpreter does not compile kernels")
    failures = []
    print("| arch | dtype | pass | kernel | tiles | warps | registers | stack (spill) B | shared B | compile s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for arch in args.arch:
        for dtype_name in args.dtype:
            element = DTYPES[dtype_name][0]
            for name, kernel, constants, options in _cases(dtype_name):
                tiles = "x".join(str(constants[k]) for k in ("BL", "BM", "BN", "BD", "BC") if k in constants)
                label = f"sm_{arch} {dtype_name} {name} {kernel.__name__}"
                start = time.perf_counter()
                try:
                    compiled = _compile(kernel, element, constants, options, arch)
                except Exception as exc:  # a compile error is the finding: report it and go on
                    failures.append(f"{label}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
                    continue
                seconds = time.perf_counter() - start
                usage = _resources(compiled.asm["cubin"])
                shared = compiled.metadata.shared
                if shared > SHARED_LIMIT_BYTES[arch]:
                    failures.append(f"{label}: {shared} B shared memory > {SHARED_LIMIT_BYTES[arch]} B")
                print(
                    f"| sm_{arch} | {dtype_name} | {name} | {kernel.__name__} | {tiles or '-'} | "
                    f"{options.get('num_warps', 4)} | {usage.get('REG')} | {usage.get('STACK')} | {shared} | {seconds:.1f} |",
                    flush=True,
                )
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
