"""Programmatic dependent launch (PDL, Hopper and later): a decode step's next kernel launched while this one
finishes, so that its launch and its programs' start-up overlap this one's tail instead of following it.

At batch 1 a gpt-oss layer is 6 kernels of a few microseconds each (tests/test_kernels_engine.py), and each
boundary costs the GPU a drain and a ramp-up even when a CUDA graph replays the launches. With PDL on, each of the
decode kernels below is launched with the programmatic-stream-serialization attribute (triton's `launch_pdl`) and
starts with `_pdl_enter`: it lets the kernel after it launch (griddepcontrol.launch_dependents: that one's
programs start as soon as all of this kernel's have) and then waits (griddepcontrol.wait) until the kernel before
it has completed and its writes are visible. Nothing is read or written before that wait, so the order of the
computation is the stream's order, as without PDL: a kernel's wait returns only after its predecessor completed,
whose own wait returned only after its predecessor completed, and so on; a kernel launched the ordinary way
(torch's, cuBLAS) waits for everything before it as always, and one before a PDL kernel that never signals just
lets it start when it completes.
Weight prefetch (PREFETCH, on with PDL unless GPT_OSS_KIT_PDL_PREFETCH=0): a kernel whose weights no kernel writes
(the qkv, out, router and unembedding projections) asks L2 for its programs' weight rows before it waits
(`_prefetch_rows`), so that its first bytes stream while the kernel before it finishes instead of after. A prefetch
is a hint that returns nothing and waits for nothing, and it cannot read stale data (L2 is where every kernel's
writes land), so it changes no result; PDL's value is 2 in those launches.
Off by default (GPT_OSS_KIT_PDL=1 or `ENABLED = True` turns it on): never measured yet. bench/gpu.py's variant
`triton-pdl` is the A/B the device check runs; CUDA-graph capture keeps the programmatic edges from CUDA 12.3.
The kernels using it: qkv_rope_cache_write's, the attention's, the linear's, routed_moe's router and the GEMV up
and down kernels (a batch-1 decode step's); on CPU (the interpreter) and before Hopper it is always off.
"""
import os

import torch
import triton
import triton.language as tl

try:  # triton >= 3.4 (the GPU image's 3.6, the dev venv's 3.9)
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:  # pragma: no cover - older triton: PDL unavailable
    gdc_launch_dependents = gdc_wait = None

ENABLED = os.environ.get("GPT_OSS_KIT_PDL", "0") == "1"
PREFETCH = os.environ.get("GPT_OSS_KIT_PDL_PREFETCH", "1") == "1"  # with PDL only (bench: triton-pdl-noprefetch)


def pdl_on(device) -> bool:
    """Whether launches on `device` use PDL: ENABLED, a CUDA device of compute capability 9 or more, a triton
    with grid dependency control, and not the interpreter."""
    if not ENABLED:  # the default: no per-launch cost beyond this test
        return False
    device = torch.device(device)
    return (device.type == "cuda" and gdc_wait is not None and os.environ.get("TRITON_INTERPRET", "0") != "1"
            and torch.cuda.get_device_capability(device)[0] >= 9)


def launch_args(device) -> dict:
    """A PDL kernel's launch arguments on `device`: its PDL constexpr and, when on, the launch keyword that asks the
    driver for a programmatic dependent launch."""
    if not pdl_on(device):
        return dict(PDL=False)
    return dict(PDL=2 if PREFETCH else 1, launch_pdl=True)  # 2: with the weight prefetch (kernels that have one)


@triton.jit
def _pdl_enter(PDL: tl.constexpr):
    """A PDL kernel's first step: let the next kernel launch, then wait for the previous one (see the module)."""
    if PDL:
        gdc_launch_dependents()
        gdc_wait()


# the 128-byte lines of a weight row _prefetch_rows asks for, one every PREFETCH_STRIDE elements (bf16: every line
# of a row of up to 64 x 64 = 4096 features, gpt-oss's widest input; wider or fp32 rows are prefetched in part: a hint)
PREFETCH_LINES, PREFETCH_STRIDE = tl.constexpr(64), tl.constexpr(64)


@triton.jit
def _prefetch_l2(ptrs):
    """prefetch.global.L2 of the line at each of ptrs: a hint, no data returned, nothing waited for."""
    tl.inline_asm_elementwise("prefetch.global.L2 [$1];\n mov.u32 $0, 0;", "=r,l", [ptrs], dtype=tl.int32,
                              is_pure=False, pack=1)


@triton.jit
def _prefetch_rows(PDL: tl.constexpr, w_ptr, offs_o, mask_o, C: tl.constexpr):
    """With PDL == 2, before _pdl_enter: L2 prefetch of weight rows offs_o (C elements each, row-major; masked rows
    ask for row 0), read-only weights only (see the module)."""
    if PDL == 2:
        col = tl.minimum(tl.arange(0, PREFETCH_LINES) * PREFETCH_STRIDE, C - 1)
        rows = tl.where(mask_o, offs_o, 0).to(tl.int64)
        _prefetch_l2(w_ptr + rows[:, None] * C + col[None, :])

