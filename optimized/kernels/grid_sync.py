"""The last program to finish does the final step: a reduction across programs without a second launch.

A kernel whose programs each write a partial result (split-KV attention's softmax states) used to need a second
kernel to combine them; at decode, where a layer's kernels take a few microseconds each, a launch is a fair part of
the step. Instead each program, after writing its part, increments a counter in global memory; the program that
brings it to n (the last of the n to arrive, whichever it is) reads every part back and does the final step, in a
fixed order (the result does not depend on which program came last), then puts the counter back to 0 for the next
launch (a CUDA graph replays the same counters).
Memory ordering: a barrier first, so every thread of the program has stored its part, then the increment with
acquire-release semantics at GPU scope (the release publishes the parts, the last program's acquire sees all of
them); the last program reads the parts with `.cg` loads (L2, never a stale L1 line).
Counters: one int32 per group of programs that reduce together, zero between launches, from `counters()` (one
buffer per device, grown outside any CUDA-graph capture: the engine's warm-up calls come first).
"""
import torch
import triton
import triton.language as tl


@triton.jit
def _last_to_arrive(count_ptr, n):
    """Whether this program is the n-th of the n programs that call it on count_ptr in this launch; that one
    resets the counter to 0."""
    tl.debug_barrier()  # every thread's stores of this program come before the release below
    arrived = tl.atomic_add(count_ptr, 1, sem="acq_rel", scope="gpu")
    last = arrived == n - 1
    if last:
        tl.store(count_ptr, 0)  # no other program touches it again in this launch
    return last


_COUNTERS: dict = {}


def counters(device, n: int) -> torch.Tensor:
    """n zeroed int32 counters on device, shared by every kernel that uses them on this device (each launch leaves
    them at 0). Allocated once (at least 4096) and grown when more are asked for."""
    key = torch.device(device)
    buf = _COUNTERS.get(key)
    if buf is None or buf.numel() < n:
        if key.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError("grid_sync.counters: first call inside a CUDA-graph capture; call once before it")
        buf = torch.zeros(max(4096, triton.next_power_of_2(n)), dtype=torch.int32, device=key)
        _COUNTERS[key] = buf
    return buf
