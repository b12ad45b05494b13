"""JSON Schema -> the TypeScript-like signature gpt-oss was trained to read in `namespace functions { ... }`.

What it is: a line-for-line behavioural port of openai/harmony `json_schema_to_typescript` and
`template_tools_section` (src/encoding.rs), checked token for token against openai-harmony 0.0.8 by
tests/test_harmony_tools.py. What it is not: a JSON Schema validator or a faithful TypeScript translation:
`$ref`, `allOf`, `anyOf`, `additionalProperties`, `minimum`... are silently ignored, as in training.

Quirks kept on purpose (the model saw them):
- property order is the dict's insertion order (serde_json `preserve_order`); namespaces sort by dict key;
- a string default is quoted raw (no escaping) unless the schema has an `enum`, then it is bare; any
  other default, and every default of a top-level `oneOf` variant but non-enum strings, is compact JSON
  as serde_json prints it (floats in ryu's shortest form: `1.0`, `1e20`, `1e-7`), of the number serde_json
  *read* from Python's JSON, which can be an ulp off (`5.8024745629578396e+28` renders `5.80247456295784e28`);
- `nullable: true` appends ` | null` unless the rendered type already contains the substring `null`;
- `type: "null"` and unknown types render as `any`; object descriptions go above the `{`.
"""

import math

from .errors import HarmonyError

_ABSENT = object()  # serde's `Value::get` returns None only for a missing key: JSON null is present


def _get(value, key):
    return value.get(key, _ABSENT) if isinstance(value, dict) else _ABSENT


def _str(value, key):
    v = _get(value, key)
    return v if isinstance(v, str) else None


def _is_enum(schema) -> bool:
    e = _get(schema, "enum")
    return isinstance(e, list) and len(e) > 0


def rust_lines(text: str) -> list[str]:
    """Rust `str::lines`: split on \\n, drop one \\r before each \\n, no empty last line after a final \\n."""
    parts = text.split("\n")
    out = [p[:-1] if p.endswith("\r") else p for p in parts[:-1]]
    if parts[-1]:
        out.append(parts[-1])
    return out


# --- serde_json's compact Display of a JSON value -------------------------------------------------


def _ryu(x: float) -> str:
    """f64 the way serde_json prints it (ryu): shortest digits, scientific outside 1e-5 .. 1e16."""
    if x == 0:
        return "-0.0" if math.copysign(1.0, x) < 0 else "0.0"
    sign = "-" if x < 0 else ""
    mantissa, _, exp = repr(abs(x)).partition("e")  # Python's repr has the same shortest digits
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    k = int(exp or 0) - len(frac)  # value = int(digits) * 10**k
    stripped = digits.rstrip("0")
    k += len(digits) - len(stripped)
    digits = stripped
    n = len(digits)
    kk = n + k  # position of the decimal point relative to the digits
    if 0 <= k and kk <= 16:
        return f"{sign}{digits}{'0' * k}.0"
    if 0 < kk <= 16:
        return f"{sign}{digits[:kk]}.{digits[kk:]}"
    if -5 < kk <= 0:
        return f"{sign}0.{'0' * -kk}{digits}"
    if n == 1:
        return f"{sign}{digits}e{kk - 1}"
    return f"{sign}{digits[0]}.{digits[1:]}e{kk - 1}"


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _json_str(s: str) -> str:
    return '"' + "".join(_ESCAPES.get(c, f"\\u{ord(c):04x}" if ord(c) < 0x20 else c) for c in s) + '"'


_POW10 = [float(f"1e{i}") for i in range(309)]
_U64_MAX = 2**64 - 1


def _overflows(significand: int, digit: int) -> bool:
    return significand * 10 + digit > _U64_MAX


def serde_number(text: str):
    """The number serde_json reads from JSON text `text` (Python's json.dumps output), as openai-harmony's
    Rust core gets it: an int where it fits u64 (i64 if negative), else an f64 built the fast, inexact way
    (serde_json without `float_roundtrip`): at most 19-20 significant digits kept as a u64, the rest dropped,
    then one multiply or divide by a power of ten. That can be an ulp away from Python's float, and the model
    was trained on what serde printed, so that is what is rendered."""
    positive = not text.startswith("-")
    digits = text.lstrip("-")
    i, significand, exponent = 0, 0, 0
    while i < len(digits) and digits[i].isdigit():  # integer part
        d = int(digits[i])
        if _overflows(significand, d):
            exponent += 1  # parse_long_integer: digits past u64 only scale
        else:
            significand = significand * 10 + d
        i += 1
    is_float = False
    if i < len(digits) and digits[i] == ".":
        is_float, i = True, i + 1
        overflowed = exponent > 0
        while i < len(digits) and digits[i].isdigit():
            d = int(digits[i])
            if overflowed or _overflows(significand, d):
                overflowed = True  # parse_decimal_overflow: the remaining digits are ignored
            else:
                significand, exponent = significand * 10 + d, exponent - 1
            i += 1
    if i < len(digits) and digits[i] in "eE":
        is_float = True
        exp_text = digits[i + 1 :]
        exponent += int(exp_text)  # Python writes at most three exponent digits: no i32 overflow
    elif i != len(digits):
        raise HarmonyError(f"not a JSON number: {text!r}")
    if not is_float and exponent == 0:
        if positive:
            return significand
        if significand <= 2**63:
            return -significand
        return -float(significand)
    f = float(significand)  # u64 -> f64, rounding to nearest even as Rust's `as f64`
    while True:  # f64_from_parts
        if abs(exponent) < len(_POW10):
            if exponent >= 0:
                f *= _POW10[exponent]
                if math.isinf(f):
                    raise HarmonyError(f"number out of range in a tool's JSON schema: {text}")
            else:
                f /= _POW10[-exponent]
            break
        if f == 0.0:
            break
        if exponent >= 0:
            raise HarmonyError(f"number out of range in a tool's JSON schema: {text}")
        f /= 1e308
        exponent += 308
    return f if positive else -f


def json_number(x) -> str:
    """A number as openai-harmony renders it: Python's json.dumps, serde_json's parse, serde_json's print."""
    if isinstance(x, float) and not math.isfinite(x):
        raise HarmonyError(f"JSON cannot hold {x!r} (in a tool's JSON schema)")
    value = serde_number(repr(float(x)) if isinstance(x, float) else str(int(x)))
    return str(value) if isinstance(value, int) else _ryu(value)


def to_json(value) -> str:
    """Compact JSON, keys in insertion order: serde_json::Value's Display."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, float)):
        return json_number(value)
    if isinstance(value, str):
        return _json_str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_json_str(str(k))}:{to_json(v)}" for k, v in value.items()) + "}"
    raise HarmonyError(f"not a JSON value in a tool schema: {value!r}")


# --- schema -> TypeScript ----------------------------------------------------------------------------


def _nullable(variant, type_str: str) -> str:
    if _get(variant, "nullable") is True and "null" not in type_str:
        return f"{type_str} | null"
    return type_str


def _default_comment(schema, bare_enum_strings: bool) -> str | None:
    default = _get(schema, "default")
    if default is _ABSENT:
        return None
    if isinstance(default, str) and not _is_enum(schema):
        return f'default: "{default}"'
    if isinstance(default, str) and bare_enum_strings:
        return f"default: {default}"
    return f"default: {to_json(default)}"


def _one_of(variants: list, indent: str) -> str:
    """A top-level oneOf: one `\\n{indent} | type // comments` line per variant."""
    out = ""
    for variant in variants:
        out += f"\n{indent} | " + _nullable(variant, schema_to_typescript(variant, indent + "   "))
        comments = [c for c in (_str(variant, "description"), _default_comment(variant, False)) if c is not None]
        if comments:
            out += " // " + " ".join(comments)
    return out


def _one_of_property(key: str, val, variants: list, optional: str, indent: str) -> str:
    """A property whose schema is a oneOf: comments above, `key?:`, then one ` | type` line per variant."""
    out = ""
    prop_desc = _str(val, "description")
    # The property's description is dropped when it just repeats the first variant's.
    first_desc = _str(variants[0], "description") if variants else None
    desc_above = prop_desc is not None and prop_desc != first_desc
    if desc_above:
        out += f"{indent}// {prop_desc}\n"
    default = _default_comment(val, True)
    if default is not None:
        out += f"{indent}// {default}\n"
    out += f"{indent}{key}{optional}:\n"
    for i, variant in enumerate(variants):
        out += f"{indent} | " + _nullable(variant, schema_to_typescript(variant, indent + "   "))
        comments = []
        desc = _str(variant, "description")
        if not (i == 0 and desc_above) and desc is not None and desc != prop_desc:
            comments.append(desc)
        default = _default_comment(variant, True)
        if default is not None:
            comments.append(default)
        if comments:
            out += " // " + " ".join(comments)
        out += "\n"
    return out + f"{indent},\n"


def _object(schema, indent: str) -> str:
    out = ""
    desc = _str(schema, "description")
    if desc is not None:
        out += f"{indent}// {desc}\n"
    out += "{\n"
    props = _get(schema, "properties")
    if isinstance(props, dict):
        req = _get(schema, "required")
        required = {r for r in req if isinstance(r, str)} if isinstance(req, list) else set()
        for key, val in props.items():
            optional = "" if key in required else "?"
            title = _str(val, "title")
            if title is not None:
                out += f"{indent}// {title}\n{indent}//\n"
            has_one_of = _get(val, "oneOf") is not _ABSENT
            desc = _str(val, "description")
            if not has_one_of and desc is not None:
                out += f"{indent}// {desc}\n"
            examples = _get(val, "examples")
            if isinstance(examples, list) and examples:
                out += f"{indent}// Examples:\n"
                out += "".join(f'{indent}// - "{ex}"\n' for ex in examples if isinstance(ex, str))
            variants = _get(val, "oneOf")
            if isinstance(variants, list):
                out += _one_of_property(key, val, variants, optional, indent)
                continue
            out += f"{indent}{key}{optional}: " + _nullable(val, schema_to_typescript(val, indent + "    ")) + ","
            default = None if has_one_of else _default_comment(val, True)
            if default is not None:
                out += f" // {default}"
            out += "\n"
    return out + f"{indent}}}"


def schema_to_typescript(schema, indent: str = "") -> str:
    variants = _get(schema, "oneOf")
    if isinstance(variants, list):
        return _one_of(variants, indent)
    ty = _get(schema, "type")
    if isinstance(ty, list):
        names = ["number" if t == "integer" else t for t in ty if isinstance(t, str)]
        if names:
            return " | ".join(names)
    if not isinstance(ty, str):
        return "any"
    if ty == "object":
        return _object(schema, indent)
    if ty == "string":
        values = _get(schema, "enum")
        if isinstance(values, list):
            names = [f'"{v}"' for v in values if isinstance(v, str)]
            if names:
                return " | ".join(names)
        return "string"
    if ty in ("number", "integer"):
        return "number"
    if ty == "boolean":
        return "boolean"
    if ty == "array":
        items = _get(schema, "items")
        return "Array<any>" if items is _ABSENT else schema_to_typescript(items, indent) + "[]"
    return "any"


def tools_section(namespaces: dict) -> str:
    """`# Tools` then one `## name` section per namespace, sorted by dict key (a Rust BTreeMap)."""
    sections = ["# Tools"]
    for key in sorted(namespaces):
        ns = namespaces[key]
        lines = [f"## {ns.name}\n"]
        if ns.description is not None:
            prefix = "// " if ns.tools else ""
            lines += [prefix + line for line in rust_lines(ns.description)]
        if ns.tools:
            lines.append(f"namespace {ns.name} {{\n")
            for tool in ns.tools:
                lines += ["// " + line for line in rust_lines(tool.description)]
                if tool.parameters is not None:
                    lines.append(f"type {tool.name} = (_: {schema_to_typescript(tool.parameters)}) => any;\n")
                else:
                    lines.append(f"type {tool.name} = () => any;\n")
            lines.append(f"}} // namespace {ns.name}")
        sections.append("\n".join(lines))
    return "\n\n".join(sections)
