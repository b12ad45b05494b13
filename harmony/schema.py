"""JSON Schema -> the TypeScript-like signature gpt-oss was trained to read in `namespace functions { ... }`.

What it is: a line-for-line behavioural port of openai/harmony `json_schema_to_typescript` and
`template_tools_section` (src/encoding.rs), checked token for token against openai-harmony 0.0.8 by
tests/test_harmony_tools.py. What it is not: a JSON Schema validator or a faithful TypeScript translation:
`$ref`, `allOf`, `anyOf`, `additionalProperties`, `minimum`... are silently ignored, as in training.

Quirks kept on purpose (the model saw them):
- property order is the dict's insertion order (serde_json `preserve_order`); namespaces sort by dict key;
- a string default is quoted raw (no escaping) unless the schema has an `enum`, then it is bare; any
  other default, and every default of a top-level `oneOf` variant but non-enum strings, is compact JSON
  as serde_json prints it (floats in ryu's shortest form: `1.0`, `1e20`, `1e-7`);
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


def json_number(x) -> str:
    if isinstance(x, int):
        if -(2**63) <= x < 2**64:
            return str(x)
        try:
            x = float(x)  # serde_json without arbitrary_precision: integers past u64/i64 become f64
        except OverflowError:
            raise HarmonyError(f"number out of range in JSON schema: {x}") from None
    if not math.isfinite(x):
        raise HarmonyError(f"JSON cannot hold {x!r} (in a tool's JSON schema)")
    return _ryu(x)


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
