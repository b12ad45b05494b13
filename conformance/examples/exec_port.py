"""An example `--impl exec:` port: the line protocol of conformance/README.md, answered by the reference.

    pytest conformance/ --impl "exec:python conformance/examples/exec_port.py"

A port in another language replaces the body of `answer` and keeps the framing: one JSON request per line on
stdin, one JSON response per line on stdout, same "id"; arrays travel as {"shape", "dtype", "data_b64"}
(little-endian bytes, base64). Print nothing else on stdout (log to stderr).
"""
import base64
import json
import sys

import numpy as np

from conformance.impls.reference import ReferenceImpl

CAPABILITIES = ["logits", "decode_logits", "batch_logits", "op_mxfp4_decode", "op_rms_norm", "op_swiglu",
                "op_route", "op_rope_cos_sin", "op_attention", "tokenize", "tokenize_special", "detokenize", "render",
                "parse", "parse_stream"]


def to_wire(a):
    if isinstance(a, (tuple, list)):
        return [to_wire(x) for x in a]
    a = np.asarray(a)
    a = a.astype("<f4" if a.dtype.kind == "f" else "<i8")  # this port answers in float32
    return {"shape": list(a.shape), "dtype": a.dtype.str, "data_b64": base64.b64encode(a.tobytes()).decode()}


def from_wire(x):
    if isinstance(x, dict) and "data_b64" in x:
        return np.frombuffer(base64.b64decode(x["data_b64"]), dtype=x["dtype"]).reshape(x["shape"])
    return x


models = {}  # checkpoint folder -> loaded model


def answer(req):
    if req["op"] == "hello":
        return {"name": "example exec port (reference, float32 answers)", "dtype": "float32", "device": "cpu",
                "capabilities": CAPABILITIES}
    if req["op"] not in CAPABILITIES:
        raise ValueError(f"unknown op {req['op']!r}")
    ckpt = req["checkpoint"]
    if ckpt not in models:
        models[ckpt] = ReferenceImpl(ckpt)
    result = getattr(models[ckpt], req["op"])(*[from_wire(a) for a in req["args"]])
    if req["op"] in ("parse", "parse_stream"):  # plain JSON: message objects / one state object per token
        return result
    if req["op"] == "detokenize":  # bytes travel as an array of byte values
        return to_wire(np.frombuffer(result, dtype=np.uint8))
    return to_wire(result)


def main():
    for line in sys.stdin:
        req = json.loads(line)
        try:
            resp = {"id": req["id"], "result": answer(req)}
        except Exception as e:  # report the error to the kit, keep serving
            resp = {"id": req["id"], "error": f"{type(e).__name__}: {e}"}
        print(json.dumps(resp), flush=True)


if __name__ == "__main__":  # importable: tests/test_conformance_exec.py builds misbehaving ports on `answer`
    main()
