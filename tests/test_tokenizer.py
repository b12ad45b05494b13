"""o200k_harmony: reference/tokenizer.py (pure Python) == harmony/tokenizer.py (tiktoken) == the oracles.

Oracles, all fed the same sha256-checked o200k_base.tiktoken, nothing downloaded:
- openai-harmony 0.0.8's own encoding (TIKTOKEN_ENCODINGS_BASE pointed at a temp copy),
- tiktoken's registered o200k_harmony and o200k_base (TIKTOKEN_CACHE_DIR holding the file under the
  name tiktoken would have cached the download as).
Two known differences, both deliberate (see reference/tokenizer.py): id 200018 has one name here
(`<|reserved_200018|>`, as in openai-harmony; tiktoken adds `<|endofprompt|>`), and openai-harmony's extra
`<|reserved_201088|>` is out of range here.
"""

import gzip
import hashlib
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without an install

import harmony.tokenizer as fast_mod  # noqa: E402
import reference.tokenizer as ref_mod  # noqa: E402
from reference.tokenizer import N_VOCAB, O200K_BASE_SHA256, PATTERN, SPECIAL_TOKENS  # noqa: E402

FIRST_SPECIAL = 199998
HARMONY_NAMES = ["<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|constrain|>", "<|return|>", "<|call|>"]

# Pieces the pre-tokenizer treats specially, mixed into random text.
FRAGMENTS = [
    "😀",
    "👩‍👩‍👧",
    "🇫🇷",
    "日本語のテキスト",
    "中文",
    "한국어",
    "Ünïcödé",
    "ﬁ",
    "e\u0301",
    "\u200b",
    "\ufeff",
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    "\n\n\n",
    "   \n ",
    "\u00a0",
    "\u3000",
    "\x0b\x0c",
    "\x1c\x1d\x1e\x1f",
    "0",
    "123",
    "1234567",
    "٣٤٥",
    "3.14",
    "-42",
    "I'm",
    "you'RE",
    "they'll",
    "we'VE",
    "it's",
    "'s",
    "DON'T",
    "<|",
    "|>",
    "<|end",
    "<|endofprompt|>",
    "<|reserved_201088|>",
    "\\",
    "//",
    "...",
    "?!",
    "a/b\n",
    "HTTPServer",
    "camelCase",
    "ALLCAPS",
    "x",
    " hello",
    " world",
    *list(SPECIAL_TOKENS)[:12],
    *HARMONY_NAMES,
]
texts = st.lists(
    st.one_of(st.text(st.characters(exclude_categories=("Cs",)), max_size=12), st.sampled_from(FRAGMENTS)),
    max_size=10,
).map("".join)
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def ref():
    return ref_mod.get_tokenizer()


@pytest.fixture(scope="module")
def fast():
    return fast_mod.get_tokenizer()


@pytest.fixture(scope="module", params=["reference", "fast"])
def tok(request, ref, fast):
    return {"reference": ref, "fast": fast}[request.param]


@pytest.fixture(scope="module")
def harmony_enc(tmp_path_factory):
    openai_harmony = pytest.importorskip("openai_harmony")
    folder = tmp_path_factory.mktemp("tiktoken_encodings")
    ref_mod.write_o200k_base(folder)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIKTOKEN_ENCODINGS_BASE", str(folder))
        return openai_harmony.load_harmony_encoding(openai_harmony.HarmonyEncodingName.HARMONY_GPT_OSS)


@pytest.fixture(scope="module")
def tiktoken_encodings(tmp_path_factory):
    """tiktoken's own o200k_base and o200k_harmony, from its registry, reading our file as its cache."""
    import tiktoken
    import tiktoken.registry

    url = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
    cache = tmp_path_factory.mktemp("tiktoken_cache")
    (cache / hashlib.sha1(url.encode()).hexdigest()).write_bytes(ref_mod.o200k_base_bytes())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIKTOKEN_CACHE_DIR", str(cache))
        mp.setattr(tiktoken.registry, "ENCODINGS", {})  # build fresh from the cache above, then forget them
        return tiktoken.get_encoding("o200k_base"), tiktoken.get_encoding("o200k_harmony")


# --- tables -------------------------------------------------------------------------------------------


def test_pattern_and_ranks_are_tiktokens(tiktoken_encodings):
    base, harmony = tiktoken_encodings
    assert PATTERN == base._pat_str == harmony._pat_str
    assert ref_mod.load_o200k_base() == base._mergeable_ranks
    assert sorted(ref_mod.load_o200k_base().values()) == list(range(FIRST_SPECIAL))


def test_special_table():
    assert N_VOCAB == 201088
    assert sorted(SPECIAL_TOKENS.values()) == list(range(FIRST_SPECIAL, N_VOCAB))
    named = {k: v for k, v in SPECIAL_TOKENS.items() if not k.startswith("<|reserved_")}
    assert named == {
        "<|startoftext|>": 199998,
        "<|endoftext|>": 199999,
        "<|return|>": 200002,
        "<|constrain|>": 200003,
        "<|channel|>": 200005,
        "<|start|>": 200006,
        "<|end|>": 200007,
        "<|message|>": 200008,
        "<|call|>": 200012,
    }
    assert all(name == f"<|reserved_{i}|>" for name, i in SPECIAL_TOKENS.items() if name not in named)


def test_special_table_vs_tiktoken(tiktoken_encodings):
    _, harmony = tiktoken_encodings
    theirs = dict(harmony._special_tokens)
    assert theirs.pop("<|endofprompt|>") == 200018  # tiktoken's second name for <|reserved_200018|>
    assert theirs == SPECIAL_TOKENS
    assert harmony.n_vocab == N_VOCAB


def test_special_table_vs_openai_harmony(harmony_enc):
    assert set(harmony_enc.special_tokens_set) - set(SPECIAL_TOKENS) == {"<|reserved_201088|>"}
    assert set(SPECIAL_TOKENS) <= set(harmony_enc.special_tokens_set)
    # One call for all 1090 names (the oracle rebuilds its special-token regex on every encode call).
    names, ids = list(SPECIAL_TOKENS), list(SPECIAL_TOKENS.values())
    assert harmony_enc.encode("".join(names), allowed_special=set(names), disallowed_special=()) == ids
    assert [harmony_enc.decode([i]) for i in ids] == names


def test_every_special_token(tok):
    assert tok.special_tokens == SPECIAL_TOKENS and tok.n_vocab == N_VOCAB
    for name, i in SPECIAL_TOKENS.items():
        assert tok.encode(name, allowed_special={name}) == [i]
        assert tok.encode(name, allowed_special="all") == [i]
        assert tok.decode_single_token_bytes(i) == name.encode()
        assert tok.decode([i]) == name
        assert tok.is_special(i)
    assert not tok.is_special(FIRST_SPECIAL - 1) and not tok.is_special(0)


# --- security: special-token text typed by a user stays text ------------------------------------


def test_special_text_is_plain_text_by_default(tok):
    for name in SPECIAL_TOKENS:
        for ids in (tok.encode(name), tok.encode_ordinary(name), tok.encode(f"x{name}y", allowed_special=set())):
            assert ids and max(ids) < FIRST_SPECIAL, name
    assert tok.encode("<|end|>") == tok.encode_ordinary("<|end|>") == [27, 91, 419, 91, 29]
    # Allowing one name lets that one through and no other.
    assert tok.encode("<|start|><|end|>", allowed_special={"<|end|>"}) == [27, 91, 5236, 91, 29, 200007]


@FAST
@given(text=texts, allowed=st.sets(st.sampled_from(HARMONY_NAMES)))
def test_only_allowed_specials_appear(fast, text, allowed):
    allowed_ids = {SPECIAL_TOKENS[n] for n in allowed}
    assert all(t < FIRST_SPECIAL or t in allowed_ids for t in fast.encode(text, allowed_special=allowed))


def test_bad_allowed_special(tok):
    with pytest.raises(ValueError, match="endofprompt"):
        tok.encode("x", allowed_special={"<|endofprompt|>"})
    with pytest.raises(ValueError, match="collection of names"):
        tok.encode("x", allowed_special="<|end|>")
    with pytest.raises(TypeError):
        tok.encode(b"bytes")
    with pytest.raises(TypeError):
        tok.encode_ordinary(None)


# --- reference == fast == oracles on random text --------------------------------------------------


@SLOW
@given(text=texts)
def test_encode_agrees(ref, fast, harmony_enc, tiktoken_encodings, text):
    ids = fast.encode_ordinary(text)
    assert ref.encode_ordinary(text) == ids
    assert harmony_enc.encode(text, disallowed_special=()) == ids
    assert tiktoken_encodings[0].encode_ordinary(text) == ids
    assert ref.encode(text) == fast.encode(text) == ids
    assert ref.decode(ids) == fast.decode(ids) == harmony_enc.decode(ids) == text


@SLOW
@given(text=texts)
def test_encode_with_specials_agrees(ref, fast, harmony_enc, text):
    ids = fast.encode(text, allowed_special="all")
    assert ref.encode(text, allowed_special="all") == ids
    # disallowed_special=(): the oracle also knows <|reserved_201088|>, which is out of range (plain text) here.
    assert harmony_enc.encode(text, allowed_special=set(SPECIAL_TOKENS), disallowed_special=()) == ids
    assert ref.decode(ids) == fast.decode(ids) == text


SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff", "\ud83d\ude00", "\ude00\ud83d", "\ud83d\ud83d\ude00"]
surrogate_texts = st.lists(
    st.one_of(
        st.sampled_from(SURROGATES), texts, st.text(st.characters(codec=None, exclude_categories=()), max_size=6)
    ),
    min_size=1,
    max_size=6,
).map("".join)


@SLOW
@given(text=surrogate_texts)  # lone surrogates: tiktoken pairs what it can (UTF-16 style), U+FFFD for the rest
def test_surrogates_like_tiktoken(ref, fast, tiktoken_encodings, text):
    assert ref.encode(text) == fast.encode(text) == tiktoken_encodings[0].encode(text, disallowed_special=())
    assert ref.encode_ordinary(text) == fast.encode_ordinary(text) == tiktoken_encodings[0].encode_ordinary(text)


def test_surrogate_pair_is_the_character(tok):
    assert tok.encode("\ud83d\ude00") == tok.encode("😀")
    assert tok.decode(tok.encode("a\ud800b")) == "a\ufffdb"


@FAST
@given(data=st.data())
def test_decode_invalid_utf8_like_tiktoken(ref, fast, harmony_enc, tiktoken_encodings, broken, data):
    # Mostly tokens that are not UTF-8 on their own (lone continuation bytes, cut characters), so the
    # replacement-character rules are what is being compared.
    ids = data.draw(st.lists(st.one_of(st.sampled_from(broken), st.integers(0, N_VOCAB - 1)), max_size=12))
    expected = tiktoken_encodings[1].decode([t for t in ids if t != 200018], errors="replace")
    got = ref.decode([t for t in ids if t != 200018])  # 200018: tiktoken's name for it is ambiguous
    assert got == expected
    assert ref.decode(ids) == fast.decode(ids) == harmony_enc.decode(ids)
    assert ref.decode_bytes(ids) == fast.decode_bytes(ids) == b"".join(map(ref.decode_single_token_bytes, ids))


@pytest.fixture(scope="module")
def broken():
    """Ids of the tokens whose bytes are not UTF-8 on their own."""
    ids = [i for b, i in ref_mod.load_o200k_base().items() if not _is_utf8(b)]
    assert len(ids) > 1000
    return ids


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


# --- fixed vectors ----------------------------------------------------------------------------------

KNOWN = [
    ("hello world", [24912, 2375]),
    ("<|start|>user<|message|>Hi<|end|>", [200006, 1428, 200008, 12194, 200007]),
]


@pytest.mark.parametrize("text,ids", KNOWN)
def test_known_vectors(tok, text, ids):
    assert tok.encode(text, allowed_special="all") == ids


def test_fixed_strings_vs_tiktoken_o200k_base(tok, tiktoken_encodings):
    base, _ = tiktoken_encodings
    for text in [
        "",
        " ",
        "The quick brown fox jumps over the lazy dog.",
        "I'M here, they'll go; it's 2025-01-01T12:34:56Z",
        "def f(x):\n    return x ** 2  # square\n\n\n",
        "    \t  \n  trailing   ",
        "😀😀 👩‍👩‍👧 🇫🇷",
        "数学是科学的皇后。",
        "Ελληνικά и русский",
        "١٢٣٤٥٦٧",
        "a" * 3000,
        "\n" * 500,
        " " * 500 + "x",
    ]:
        assert tok.encode_ordinary(text) == base.encode_ordinary(text), text[:40]


@pytest.mark.parametrize(
    "text", ["a" * 100_000, "A" * 50_000, "7" * 50_000, " " * 50_000, "!" * 50_000, "語" * 30_000]
)
def test_long_inputs_are_fast_and_agree(ref, fast, text):
    # tiktoken's merge loop is quadratic in a piece's length; the reference's heap must not be.
    assert ref.encode_ordinary(text) == fast.encode_ordinary(text)


# --- decode errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1, N_VOCAB, 201088, 10**12, "7", 1.0, None, True])
def test_bad_ids(tok, bad):
    with pytest.raises(ValueError, match=rf"token id {bad!r} at position 2 "):
        tok.decode([5, 6, bad, 7])
    with pytest.raises(ValueError, match=rf"token id {bad!r} at position 0 "):
        tok.decode_bytes([bad])
    with pytest.raises(ValueError, match=rf"token id {bad!r}"):
        tok.decode_single_token_bytes(bad)
    with pytest.raises(ValueError, match=rf"token id {bad!r}"):
        tok.is_special(bad)


def test_integer_like_ids(tok):
    np = pytest.importorskip("numpy")
    assert tok.decode(np.array([24912, 2375])) == tok.decode((24912, 2375)) == "hello world"


# --- the ranks file ----------------------------------------------------------------------------------


@pytest.fixture
def bad_file(tmp_path):
    path = tmp_path / "o200k_base.tiktoken"
    path.write_bytes(b"IQ== 0\n")
    return path


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv(ref_mod.ENV_VAR, raising=False)
    monkeypatch.delenv("TIKTOKEN_ENCODINGS_BASE", raising=False)
    return monkeypatch


def test_hash_mismatch_explicit_path(bad_file):
    actual = hashlib.sha256(b"IQ== 0\n").hexdigest()
    with pytest.raises(ValueError, match=rf"{bad_file}.*{actual}.*expected {O200K_BASE_SHA256}"):
        ref_mod.load_o200k_base(bad_file)


def test_hash_is_of_decompressed_bytes(tmp_path):
    gz = tmp_path / "o200k_base.tiktoken.gz"
    gz.write_bytes(gzip.compress(ref_mod.o200k_base_bytes()))
    assert ref_mod.load_o200k_base(gz) == ref_mod.load_o200k_base()
    bad = tmp_path / "bad.tiktoken.gz"
    bad.write_bytes(gzip.compress(b"IQ== 0\n"))
    with pytest.raises(ValueError, match="decompressed"):
        ref_mod.load_o200k_base(bad)


def test_resolution_order(clean_env, bad_file, tmp_path):
    good = ref_mod.write_o200k_base(tmp_path / "good")
    clean_env.setenv("TIKTOKEN_ENCODINGS_BASE", str(good.parent))
    assert ref_mod._resolve() == good  # tiktoken's folder convention: $TIKTOKEN_ENCODINGS_BASE/o200k_base.tiktoken
    assert len(ref_mod.load_o200k_base()) == FIRST_SPECIAL
    clean_env.setenv("TIKTOKEN_ENCODINGS_BASE", str(bad_file.parent))
    with pytest.raises(ValueError, match=str(bad_file)):
        ref_mod.load_o200k_base()  # $TIKTOKEN_ENCODINGS_BASE beats the package data
    assert hashlib.sha256(good.read_bytes()).hexdigest() == O200K_BASE_SHA256
    clean_env.setenv(ref_mod.ENV_VAR, str(good))
    assert len(ref_mod.load_o200k_base()) == FIRST_SPECIAL  # $GPT_OSS_KIT_O200K_BASE beats both
    clean_env.setenv(ref_mod.ENV_VAR, str(bad_file))
    with pytest.raises(ValueError, match=str(bad_file)):
        ref_mod.load_o200k_base()
    assert len(ref_mod.load_o200k_base(good)) == FIRST_SPECIAL  # the argument beats everything


def test_missing_file(clean_env, tmp_path):
    with pytest.raises(FileNotFoundError, match="path argument: .*nowhere"):
        ref_mod.load_o200k_base(tmp_path / "nowhere")
    clean_env.setenv(ref_mod.ENV_VAR, str(tmp_path / "missing1"))
    clean_env.setenv("TIKTOKEN_ENCODINGS_BASE", str(tmp_path / "missing2"))
    clean_env.setattr(ref_mod, "_packaged_path", lambda: tmp_path / "missing3.gz")
    with pytest.raises(FileNotFoundError) as err:
        ref_mod.load_o200k_base()
    assert all(f"missing{i}" in str(err.value) for i in (1, 2, 3))
