"""bench/sass_roofline.py: the MoE decode kernels and the decode attention compiled for sm_90 on this machine,
their main loops found in the SASS and counted. Checks that the tool finds the right loop (the tensor-core
paths' loops hold the MMAs, the GEMV's its FMAs and no MMA) and that its arithmetic is the documented one;
never how fast anything is."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_sass_roofline_counts_the_main_loops(tmp_path):
    pytest.importorskip("triton.backends.nvidia")
    out = tmp_path / "roofline.json"
    proc = subprocess.run([sys.executable, "bench/sass_roofline.py", "--configs", "engine", "--kernels",
                           "down,attention", "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert [r["config"]["path"] for r in rows] == ["gemv", "dot_scaled", "dot", "decode 8k"]
    attn = rows.pop()
    assert attn["kernel"] == "attn" and attn["ops"].get("HMMA", 0) + attn["ops"].get("HGMMA", 0) > 0, attn["ops"]
    assert attn["bytes"] == 64 * (4 * 64 + 8) and attn["programs"] == 8 * 8192 // 256
    for r in rows:
        c = r["config"]
        mma = r["ops"].get("HMMA", 0) + r["ops"].get("HGMMA", 0)
        if c["path"] == "gemv":
            assert mma == 0 and r["ops"].get("FFMA", 0) > 0, r["ops"]
        else:
            assert mma > 0, r["ops"]
        # the down GEMV reads its token's 4 experts an iteration, in one program per block of rows; the
        # tensor-core kernels one expert, in a program per (expert, block of rows)
        experts, programs = (4, 1) if c["path"] == "gemv" else (1, 4)
        assert r["bytes"] == experts * c["BLOCK_N_DOWN"] * (c["BLOCK_K"] // 2 + c["BLOCK_K"] // 32)
        assert abs(r["per_byte"] - r["loop"] * c["num_warps"] / r["bytes"]) < 1e-9
        assert r["programs"] == programs * -(-2880 // c["BLOCK_N_DOWN"]) and 0 < r["balance"] <= 1
        assert set(r["ceiling"]) == {"H100 SXM", "H200"} and all(0 < v <= 1 for v in r["ceiling"].values())
        assert r["regs"] > 0 and r["spill"] >= 0 and 0 <= r["smem"] <= 227 * 1024
        assert f" {r['loop']:5d} " in proc.stdout
    assert "sm_90 SASS (triton" in proc.stdout and "ceil H200" in proc.stdout and "\nattn " in proc.stdout


def test_sass_roofline_prefill_attention_is_bounded_by_issue_and_exp2(tmp_path):
    """The prefill attention rows (a full layer's prompt and a sliding one's, each loop: unmasked and masked), for the
    engine's tile and then each of bench/gpu.py's ATTN_SWEEP tiles: each loop holds the two MMAs and the exp2s
    (MUFU), the masked one more; the tile is attention.tiles' for bf16 (with PREFILL_TILE set to the sweep's); the
    ceiling is over the tensor-core rate, at most what the issue rate and the exp2 rate each allow."""
    pytest.importorskip("triton.backends.nvidia")
    out = tmp_path / "roofline.json"
    proc = subprocess.run([sys.executable, "bench/sass_roofline.py", "--configs", "sweep,prefill", "--kernels",
                           "attention", "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    decode, *prefill = data["rows"]
    assert decode["config"]["path"] == "decode 8k"
    assert [r["config"]["path"] for r in prefill[:4]] == ["prefill 2k", "prefill 2k masked", "prefill 2k window",
                                                          "prefill 2k window masked"]
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import gpu
    finally:
        sys.path.pop(0)
    want = [(128, 128, 8)] * 2 + [(128, 64, 8)] * 2  # the engine's: 64 keys a step on windowed layers
    for t in gpu.ATTN_SWEEP[1:]:
        want += [(t["BLOCK_M"], t["BLOCK_N"], t["num_warps"])] * 2 + [(t["BLOCK_M"], t["BLOCK_N_WINDOW"],
                                                                        t["num_warps"])] * 2
    assert [(r["config"]["BLOCK_M"], r["config"]["BLOCK_N"], r["config"]["num_warps"]) for r in prefill] == want
    for plain, masked in zip(prefill[::2], prefill[1::2]):
        assert masked["config"]["path"] == plain["config"]["path"] + " masked"
        assert masked["loop"] > plain["loop"] and masked["regs"] == plain["regs"]  # one kernel, its two loops
    for r in prefill:
        c, ops = r["config"], r["ops"]
        assert ops.get("HMMA", 0) + ops.get("HGMMA", 0) > 0 and ops.get("MUFU", 0) > 0, ops
        flops = 4 * c["BLOCK_M"] * c["BLOCK_N"] * 64  # two MMAs of (rows) x (keys) x (head_dim 64) a step
        for card, (sms, ghz, _, tflops) in data["cards"].items():
            issue = 4 * sms * ghz * 1e9 * flops / (r["loop"] * c["num_warps"])
            exp2 = 0.5 * sms * ghz * 1e9 * flops / (ops["MUFU"] * c["num_warps"])
            want = min(1.0, min(issue, exp2) * r["balance"] / (tflops * 1e12))
            assert abs(r["ceiling"][card] - want) < 1e-9, (card, r["ceiling"][card], want)


def test_sass_roofline_counts_the_decode_projections(tmp_path):
    """The linear rows (kernels/linear.py at batch 1, and qkv with RoPE + the cache write): FMAs and no MMA in the
    loop, a bf16 weight tile's bytes an iteration, one program per block of weight rows; far from issue-bound (a
    weight costs a convert and an FMA)."""
    pytest.importorskip("triton.backends.nvidia")
    out = tmp_path / "roofline.json"
    proc = subprocess.run([sys.executable, "bench/sass_roofline.py", "--configs", "engine", "--kernels", "linear",
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["config"]["path"] for r in rows] == ["qkv 2880->5120", "out 4096->2880", "qkv+rope 2880->5120"]
    for r, O in zip(rows, (5120, 2880, 5120)):
        c = r["config"]
        assert r["kernel"] == "linear" and r["ops"].get("FFMA", 0) > 0
        assert r["ops"].get("HMMA", 0) + r["ops"].get("HGMMA", 0) == 0, r["ops"]
        assert r["bytes"] == c["BLOCK_N"] * c["BLOCK_K"] * 2 and r["programs"] == -(-O // c["BLOCK_N"])
        assert r["per_byte"] < 0.2 and all(v == 1.0 for v in r["ceiling"].values()), r
    assert "\nlinear " in proc.stdout
