"""Compile the engine's Triton kernels ahead of time for a GPU target, on any machine (no GPU needed).

triton.compile with a GPUTarget goes through PTX to a cubin with the ptxas bundled in the triton wheel. Used by
tests/test_kernels_compile.py (every kernel compiles for Hopper with its wrapper's tile sizes) and by
bench/sass_roofline.py (the instructions a kernel's main loop issues per byte it loads, read from the SASS).
The kernels must have been defined with TRITON_INTERPRET=0 (an interpreted kernel cannot be compiled): run
this in a process that set it before importing optimized.kernels.

Two kinds of compile: plain (`ints=None`: every int an i32, no alignment: the most general program) and
specialized as the JIT specializes a real launch (`ints` = the int arguments' values): pointers from torch
allocations 16-byte aligned, an int argument equal to 1 turned into a constant, ints divisible by 16 marked so.
The same rule in triton 3.6 and 3.9.
"""
import os
import re
import subprocess

# pointer element types and scalar types by argument name; constexpr arguments come from each case
TYPES = {"ids_ptr": "*i32", "order_ptr": "*i32", "pair_ptr": "*i32", "tile_expert_ptr": "*i32",
         "tile_start_ptr": "*i32", "tile_stop_ptr": "*i32", "w_ptr": "*u8", "s_ptr": "*u8", "weights_ptr": "*fp32",
         "y_ptr": "*fp32", "sinks_ptr": "*fp32", "qpos_ptr": "*i64", "kpos_ptr": "*i64", "pm_ptr": "*fp32",
         "pl_ptr": "*fp32", "pacc_ptr": "*fp32", "limit": "fp32", "qk_scale": "fp32", "cos_ptr": "*fp32",
         "sin_ptr": "*fp32", "pos_ptr": "*i64", "pc_ptr": "*i64", "scale_ptr": "*fp32", "eps": "fp32",
         "xs_ptr": "*fp32", "cnt_ptr": "*i32", "bnd_ptr": "*i32"}
ACT = ("x_ptr", "b_ptr", "h_ptr", "q_ptr", "k_ptr", "v_ptr", "o_ptr", "out_ptr", "res_ptr", "logits_ptr", "qkv_ptr",
       "kc_ptr", "vc_ptr", "kn_ptr", "vn_ptr")  # activation dtype


def arg_type(name, param, dt):
    if name == "_route_kernel" and param == "w_ptr":
        return "*fp32"  # the routing weights, not packed expert weights
    if name == "_moe_router_kernel" and param in ("gw_ptr", "gb_ptr", "logits_ptr"):
        return f"*{dt}"  # the router's weights and logits, in the activation dtype
    if name == "_moe_router_kernel" and param == "wts_ptr":
        return "*fp32"
    if name in ("_linear_kernel", "_qkv_rope_cache_kernel") and param in ("w_ptr", "b_ptr"):
        return f"*{dt}"  # dense weights and biases in the activation dtype
    if name.endswith("_gemv_kernel") and param == "w_ptr":
        return "*i32"  # the packed codes read as 32-bit words
    if name.endswith("_gemv_kernel") and param == "h_ptr":
        return "*fp32"  # the batch-1 intermediate, laid out as x (moe.gemv_x_ref)
    if param in ACT:
        return f"*{dt}"
    return TYPES.get(param, "i32")  # sizes and counts


def specialize(fn, name, dt, consts, ints):
    """signature, constexprs and attrs for ASTSource. ints None: every argument plain. Else as the JIT
    specializes a launch: pointers 16-byte aligned, an int equal to 1 a constant, an int divisible by 16
    (0 included) marked so."""
    sig, consts, attrs = {}, dict(consts), {}
    if any(p.name == "PDL" for p in fn.params):
        consts.setdefault("PDL", False)  # pdl.py: off unless a case asks for it
    for i, p in enumerate(fn.params):
        if p.is_constexpr:
            sig[p.name] = "constexpr"
            continue
        ty = arg_type(name, p.name, dt)
        sig[p.name] = ty
        if ints is None:
            continue
        if ty.startswith("*"):
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif ty == "i32":
            value = ints[p.name]  # a KeyError here: the case lacks a value for this argument
            if value == 1:
                sig[p.name], consts[p.name] = "constexpr", 1
            elif value % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    return sig, consts, attrs


def compile_kernel(fn, name, dt, consts, launch, ints=None, arch=90):
    """One kernel for sm_{arch}: dt the activation dtype ("bf16", "fp32", ...), consts its constexprs, launch
    num_warps / num_stages / debug. Returns triton's CompiledKernel (asm["ptx"], asm["cubin"], metadata)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    sig, constexprs, attrs = specialize(fn, name, dt, consts, ints)
    return triton.compile(ASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs),
                          target=GPUTarget("cuda", arch, 32), options=launch)


def _cuobjdump(cubin: bytes, work_dir: str, flag: str) -> str:
    import triton
    path = os.path.join(work_dir, "kernel.cubin")
    with open(path, "wb") as f:
        f.write(cubin)
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    return subprocess.run([tool, flag, path], capture_output=True, text=True, check=True).stdout


def resources(cubin: bytes, work_dir: str) -> dict:
    """Registers per thread and local memory (spills) of a cubin's kernel: {'REG': n, 'STACK': n, 'LOCAL': n, ...}."""
    text = _cuobjdump(cubin, work_dir, "-res-usage")
    return {k: int(v) for k, v in re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", text)}


def sass(cubin: bytes, work_dir: str) -> list[tuple[int, str]]:
    """A cubin's SASS as (address, instruction) pairs, by the cuobjdump bundled in the triton wheel."""
    text = _cuobjdump(cubin, work_dir, "-sass")
    out = []
    for line in text.splitlines():
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s*(.*?)\s*;", line)
        if m:
            out.append((int(m.group(1), 16), m.group(2)))
    return out


def opcode(instruction: str) -> str:
    """'@!P0 LDGSTS.E.BYPASS.128 [R1], ...' -> 'LDGSTS' (predicate and modifiers dropped)."""
    return re.sub(r"^@!?U?P[0-9T]+\s+", "", instruction).split()[0].split(".")[0]


def loops(code: list[tuple[int, str]]) -> list[list[str]]:
    """The instructions of each loop of a kernel: the body of each backward branch, in address order."""
    out = []
    for at, ins in code:
        m = re.search(r"\bBRA\b.*?0x([0-9a-f]+)", ins)
        if m and int(m.group(1), 16) < at:
            out.append([i for a, i in code if int(m.group(1), 16) <= a <= at])
    return out


def main_loop(code: list[tuple[int, str]]) -> list[str]:
    """The instructions of the kernel's main loop: the body of its longest backward branch ([] if none)."""
    return max(loops(code), key=len, default=[])
