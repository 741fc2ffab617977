"""Compile the fused renderer's kernels for an NVIDIA GPU without one, and report their resources.

The Triton interpreter (what the test suite runs on CPU) never invokes Triton's compiler; `compile_report` does, for
every kernel variant `nfldm_sdk.rendering.triton_render` launches, specialised as a real launch at the given sizes
would be, and reads registers and spills from Triton's bundled ``ptxas``. Needs compiled kernels (a process
without ``TRITON_INTERPRET=1``), no GPU.

Run::

    TRITON_INTERPRET=0 python -m nfldm_sdk.benchmarks.triton_report [--arch 90]     # JSON on stdout
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
from pathlib import Path

import torch
import triton
from triton._C.libtriton import native_specialize_impl
from triton.backends.compiler import BaseBackend, GPUTarget
from triton.compiler import ASTSource

from nfldm_sdk.rendering.triton_kernels import backward_kernel, forward_kernel
from nfldm_sdk.rendering.triton_render import (
    BLOCK_RAYS,
    EARLY_STOP,
    INTERPRETED,
    OCCUPANCY_CELL,
    KernelGrid,
    KernelOptions,
    KernelRays,
    backward_launch,
    forward_launch,
    occupancy_grid,
)

__all__ = ["compile_report", "main", "ptxas_info"]


def _empty(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A tensor of ``shape`` backed by one element (argument stand-in for compiling: no memory)."""
    return torch.empty((), dtype=dtype).expand(*shape)


def compile_report(arch: int = 90, *, channels: int = 32, grid_shape: tuple[int, int, int] = (32, 128, 128),
                   grid_dtype: torch.dtype = torch.float16, n_rays: int = 65536, n_samples: int = 128
                   ) -> list[dict]:
    """Compile every kernel variant for an NVIDIA GPU of compute capability ``arch`` (90: H100) WITHOUT a GPU,
    specialised as a real launch at these sizes would be, and report its resources.

    Checks what the interpreter cannot: that the kernels pass Triton's compiler (CI runs it in a subprocess with
    ``TRITON_INTERPRET=0``). Needs compiled kernels (`INTERPRETED` False) and Triton's bundled ``ptxas``.

    Args:
        arch: compute capability, e.g. 90.
        channels, grid_shape (Z, Y, X), grid_dtype: the field the launches are specialised for.
        n_rays, n_samples: rays per field and samples per ray.
    Returns:
        One dict per variant: ``kernel``, ``variant`` (its flags), ``registers`` and ``spill_bytes`` (per thread,
        from ``ptxas``), ``shared_bytes``.
    """
    if INTERPRETED:
        raise RuntimeError("compile_report needs compiled kernels: run it in a process without TRITON_INTERPRET=1")
    Z, Y, X = grid_shape
    C = channels
    occ = occupancy_grid(torch.zeros(1, Z, Y, X), OCCUPANCY_CELL)
    grid = KernelGrid(_empty((1, Z, Y, X)), _empty((1, Z, Y, X, C), grid_dtype), occ, OCCUPANCY_CELL)
    rays = KernelRays(_empty((1, n_rays, 3)), _empty((1, n_rays, 3)), *(_empty((1, n_rays)) for _ in range(3)), None)
    jittered = KernelRays(rays.o_n, rays.d_n, rays.t0, rays.delta, rays.z_per_t, _empty((1, n_rays, n_samples)))
    opts = KernelOptions(n_samples, EARLY_STOP, True, BLOCK_RAYS)
    nosk = KernelGrid(grid.density, grid.features, None, grid.cell)
    per_ray = tuple(_empty(s) for s in ((1, C, n_rays), (1, n_rays), (1, n_rays)))
    calls = [(forward_kernel, forward_launch(g, r, opts)[:3]) for g in (grid, nosk) for r in (rays, jittered)]
    calls += [(backward_kernel, backward_launch(grid, rays, opts, per_ray, per_ray, ds, dfe)[:3])
              for ds, dfe in ((True, True), (True, False), (False, True))]
    report = []
    for fn, (_, args, meta) in calls:
        meta = dict(meta)
        num_warps = meta.pop("num_warps")
        signature, constexprs, attrs = {}, dict(meta), {}
        names = [n for n in fn.arg_names if n not in meta]
        for name, value in zip(names, args):
            kind, spec = native_specialize_impl(BaseBackend, value, False, True, True)
            if kind == "constexpr":                                            # ints equal to 1
                constexprs[name] = value
            if spec == "D":
                attrs[(fn.arg_names.index(name),)] = [["tt.divisibility", 16]]
            signature[name] = kind
        for name in meta:
            signature[name] = "constexpr"
        kernel = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=GPUTarget("cuda", arch, 32),
                                options={"num_warps": num_warps})
        info = ptxas_info(kernel.asm["ptx"], arch) or ""
        regs, spill = re.search(r"Used (\d+) registers", info), re.search(r"(\d+) bytes spill stores", info)
        report.append({"kernel": fn.__name__, "variant": meta, "registers": int(regs.group(1)) if regs else None,
                       "spill_bytes": int(spill.group(1)) if spill else None, "shared_bytes": kernel.metadata.shared})
    return report


def ptxas_info(ptx: str, arch: int) -> str | None:
    """``ptxas -v`` output for a PTX module compiled for ``sm_<arch>`` (registers, spills), or None without
    Triton's bundled ptxas."""
    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    if not ptxas.exists():
        return None
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "k.ptx"
        src.write_text(ptx)
        r = subprocess.run([str(ptxas), "-v", f"--gpu-name=sm_{arch}{'a' if arch >= 90 else ''}", str(src), "-o",
                            str(Path(d) / "k.cubin")], capture_output=True, text=True, check=False)
        return r.stdout + r.stderr


def main(argv: list[str] | None = None) -> list[dict]:
    """``python -m nfldm_sdk.benchmarks.triton_report [--arch 90] [--indent N]``: the report as JSON on stdout."""
    p = argparse.ArgumentParser(prog="python -m nfldm_sdk.benchmarks.triton_report", description=__doc__.split("\n")[0])
    p.add_argument("--arch", type=int, default=90, help="compute capability (90: H100/H200)")
    p.add_argument("--indent", type=int, default=None, help="JSON indent (default: one line)")
    a = p.parse_args(argv)
    report = compile_report(a.arch)
    print(json.dumps(report, indent=a.indent))
    return report


if __name__ == "__main__":
    main()
