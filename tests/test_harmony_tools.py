"""Tool sections against openai-harmony 0.0.8: JSON Schema -> TypeScript-like text, and numbers exactly as
its Rust core prints them (read by serde_json from Python's JSON, then printed by ryu)."""

import math

from hypothesis import given
from hypothesis import strategies as st

from harmony.schema import serde_number
from harmony_helpers import build_oracle, build_ours, examples, outcome, same_behaviour, typed_schemas


def _developer(parameters) -> dict:
    tools = {"functions": {"name": "functions", "tools": [{"name": "f", "description": "d", "parameters": parameters}]}}
    return {
        "messages": [{"role": "developer", "name": None, "content": [{"type": "developer_content", "tools": tools}]}]
    }


def _both(oracle, ours, conv):
    oh, enc_o = oracle
    theirs = outcome(lambda: enc_o.decode_utf8(enc_o.render_conversation(build_oracle(oh, conv))))
    mine = outcome(lambda: ours.decode_utf8(ours.render_conversation(build_ours(conv))))
    same_behaviour(mine, theirs, "tool section")
    return mine


numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e30, max_value=1e30),
    st.integers(-(2**80), 2**80),
    st.integers(-(10**330), 10**330),  # past f64: out of range for serde, so an error on both sides
    st.sampled_from(
        [
            0.0,
            -0.0,
            1e16,
            1e-5,
            1e-7,
            5e-324,
            2.2250738585072014e-308,
            1.7976931348623157e308,
            2**63,
            2**64,
            -(2**63) - 1,
        ]
    ),
)


@examples(80)
@given(value=numbers, where=st.sampled_from(["default", "enum", "nested"]))
def test_numbers_print_as_the_oracle(oracle, ours, value, where):
    prop = {"type": "number", "default": value}
    if where == "enum":
        prop = {"type": "string", "enum": ["a", "b"], "default": [value, {"k": value}]}
    elif where == "nested":
        prop = {"oneOf": [{"type": "number", "default": value}, {"type": "string"}], "default": {"x": [value]}}
    _both(oracle, ours, _developer({"type": "object", "properties": {"x": prop}}))


def test_serde_reads_floats_inexactly():
    # serde_json (no float_roundtrip) keeps the digits as a u64, then multiplies once: one ulp off here.
    exact = 5.8024745629578396e28
    assert abs(serde_number(repr(exact)) - exact) == math.ulp(exact)
    assert serde_number("0.1") == 0.1 and serde_number("1e-7") == 1e-7
    assert serde_number("18446744073709551615") == 2**64 - 1 and isinstance(serde_number("18446744073709551616"), float)
    assert serde_number("-9223372036854775808") == -(2**63) and serde_number("-0") == 0


def test_documented_number_rendering(ours):
    text = ours.decode_utf8(
        ours.render_conversation(
            build_ours(
                _developer(
                    {"type": "object", "properties": {"x": {"type": "number", "default": 5.8024745629578396e28}}}
                )
            )
        )
    )
    assert "x?: number, // default: 5.80247456295784e28" in text


@examples(80)
@given(schema=typed_schemas())
def test_typed_schemas_render_as_the_oracle(oracle, ours, schema):
    kind, text = _both(
        oracle,
        ours,
        _developer(schema if schema.get("type") == "object" else {"type": "object", "properties": {"p": schema}}),
    )
    assert kind == "ok" and "namespace functions {" in text
