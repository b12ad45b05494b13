"""conformance/quality.py: the distance of a port's next-token distribution from the reference's (KL, top-1
agreement, dp, dlogp), for ports that are approximate by design (a re-quantized model)."""
import json
import math

import numpy as np
import pytest

from conformance import quality
from conformance.impls.reference import ReferenceImpl
from conformance.session import Golden
from golden.format import DATA_DIR


def test_distance_against_closed_forms():
    ref = np.log(np.array([[0.5, 0.25, 0.25], [0.9, 0.05, 0.05]]))
    got = np.log(np.array([[0.25, 0.5, 0.25], [0.9, 0.05, 0.05]])) + 3.0  # a shift of the logits changes nothing
    d = quality.distance(ref, got)
    want_kl = 0.5 * math.log(0.5 / 0.25) + 0.25 * math.log(0.25 / 0.5)
    np.testing.assert_allclose(d["kl"], [want_kl, 0.0], atol=1e-15)
    assert d["top1"].tolist() == [False, True]
    np.testing.assert_allclose(d["dp"], [0.25, 0.0], atol=1e-15)
    np.testing.assert_allclose(d["dlogp"], [math.log(2), 0.0], atol=1e-15)
    with pytest.raises(AssertionError):
        quality.distance(ref, got[:1])


class RoundedAttention(ReferenceImpl):
    """The reference with its attention projections (bf16: 8 significant bits) rounded to `bits` significant bits:
    a stand-in for a re-quantization (the experts are FP4 already: 2 bits, so rounding them to 3 changes nothing)."""

    def __init__(self, checkpoint_dir, bits):
        super().__init__(checkpoint_dir)
        ckpt, read = self.model.ckpt, self.model.ckpt.layer_weights

        def rnd(w):
            m, e = np.frexp(w)
            return np.ldexp(np.round(m * 2.0 ** bits) / 2.0 ** bits, e)

        def layer_weights(layer, part, names):
            return {n: rnd(w) if n in ("qkv.weight", "out.weight") else w for n, w in read(layer, part, names).items()}
        ckpt.layer_weights = layer_weights


def test_reference_is_at_distance_zero_and_rounding_moves_it_monotonically():
    golden = Golden(DATA_DIR)
    exact = quality.measure(ReferenceImpl, golden)
    assert {r["case"] for r in exact} == set(golden.listing()["cases"])
    assert all(r["kl_max"] < 1e-12 and r["top1"] == 1.0 and r["dlogp_max"] < 1e-12 for r in exact)
    assert all(r["bf16_dlogp"] > 0 for r in exact)  # the golden bf16 baseline, the yardstick
    kl = {bits: np.mean([r["kl_mean"] for r in quality.measure(lambda d, b=bits: RoundedAttention(d, b), golden)])
          for bits in (2, 4, 6)}
    assert kl[2] > kl[4] > kl[6] > 1e-9, kl


def test_cli_table_json_and_errors(tmp_path, capsys):
    port = tmp_path / "port.py"
    port.write_text("import numpy as np\n"
                    "from conformance.impls.reference import ReferenceImpl\n"
                    "class Noisy(ReferenceImpl):\n"
                    "    def logits(self, tokens):\n"
                    "        z = super().logits(tokens)\n"
                    "        return z + np.random.default_rng(0).normal(0, 0.5, z.shape)\n"
                    "class Short(ReferenceImpl):\n"
                    "    def logits(self, tokens): return super().logits(tokens)[:-1]\n"
                    "noisy, short = Noisy, Short\n")
    out = tmp_path / "q.json"
    quality.main(["--impl", f"{port}:noisy", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "| **all** |" in printed and "| tiny |" in printed
    data = json.loads(out.read_text())
    tiny = next(r for r in data["cases"] if r["case"] == "tiny")
    assert len(tiny["per_position"]["kl"]) == tiny["positions"] > 24  # prompt + greedy continuation
    assert 0 < tiny["kl_mean"] < 1 and tiny["top1"] < 1.0
    with pytest.raises(SystemExit, match=r"returned shape \(\d+, \d+\) for \d+ tokens, expected"):
        quality.main(["--impl", f"{port}:short"])
    with pytest.raises(SystemExit, match="cannot import 'no_such_module'"):
        quality.main(["--impl", "no_such_module:factory"])


def test_stages_show_where_the_distance_enters(tmp_path, capsys):
    """--stages: a port that rounds only layer 1's attention weights is exact up to block.0.mlp and departs at
    block.1.attn; the reference is exact everywhere; a port without intermediates() is told it needs them."""
    golden = Golden(DATA_DIR)

    class Layer1Rounded(RoundedAttention):
        def __init__(self, d):
            super().__init__(d, 3)
            rounded, exact = self.model.ckpt.layer_weights, ReferenceImpl(d).model.ckpt.layer_weights
            self.model.ckpt.layer_weights = lambda n, part, names: (rounded if n == 1 else exact)(n, part, names)

    rows = quality.measure(Layer1Rounded, golden, stages=True)
    for r in rows:
        s = r["stages"]
        # exact until layer 1, to float64 rounding (BLAS blocks a longer sequence's matmuls differently: 1e-16)
        assert max(s["embedding"], s["block.0.attn"], s["block.0.mlp"]) < 1e-12, (r["case"], s)
        assert s["block.1.attn"] > 1e-4 and s["block.0.mlp.expert_ids"] == 1.0, (r["case"], s)
    exact = quality.measure(ReferenceImpl, golden, stages=True)
    assert all(v < 1e-12 or k.endswith("expert_ids") and v == 1.0 for r in exact for k, v in r["stages"].items())
    assert "| block.1.attn |" in quality.stage_table(rows)
    port = tmp_path / "bare.py"
    port.write_text("from conformance.impls.reference import ReferenceImpl\n"
                    "class Bare:\n"
                    "    def __init__(self, d): self.inner = ReferenceImpl(d)\n"
                    "    def logits(self, tokens): return self.inner.logits(tokens)\n"
                    "bare = Bare\n")
    with pytest.raises(SystemExit, match=r"--stages needs the port's intermediates\(\)"):
        quality.main(["--impl", f"{port}:bare", "--stages"])
