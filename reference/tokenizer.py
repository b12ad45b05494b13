"""o200k_harmony, the gpt-oss tokenizer: byte-level BPE over the o200k_base ranks plus harmony's specials.

This is the spec, written to be read: pure Python and the `regex` module, no tiktoken. It is not fast;
`harmony/tokenizer.py` is the same API on tiktoken, and tests/test_tokenizer.py holds the two (and
openai-harmony 0.0.8) to agreement token for token.

Sources: tiktoken_ext/openai_public.py (o200k_base pattern and ranks file, sha256; o200k_harmony specials),
openai/harmony src/tiktoken_ext/public_encodings.rs, tiktoken src/lib.rs (`_byte_pair_merge`), and the
gpt-oss model card ("o200k_harmony ... 201,088 tokens").

Special-token quirks, checked against openai-harmony 0.0.8 and tiktoken 0.14:
- id 200018 is `<|reserved_200018|>`, as in openai-harmony. tiktoken's o200k_harmony also keeps o200k_base's
  `<|endofprompt|>` as a second name for it; gpt-oss never uses it, and one name per id keeps decode exact.
- openai-harmony 0.0.8 also knows `<|reserved_201088|>` (its range is `200014..=201088`); that id is past
  the model's 201088-row embedding table, so here it is out of range like any other.
"""

import base64
import functools
import gzip
import hashlib
import heapq
import importlib.util
import operator
import os
from pathlib import Path

import regex

O200K_BASE_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
N_VOCAB = 201088  # 199998 BPE ranks (0..199997), then 1090 special ids (199998..201087)

# tiktoken's o200k_base pat_str, character for character. Roughly: words with an optional leading
# punctuation char and English contraction suffix (two ways round for case), numbers in groups of at
# most three digits, punctuation runs, newline runs, and other whitespace (leaving one space for the next word).
PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

_NAMED_SPECIALS = {
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
_NAMED_IDS = set(_NAMED_SPECIALS.values())
SPECIAL_TOKENS: dict[str, int] = _NAMED_SPECIALS | {
    f"<|reserved_{i}|>": i for i in range(199998, N_VOCAB) if i not in _NAMED_IDS
}
assert sorted(SPECIAL_TOKENS.values()) == list(range(199998, N_VOCAB))

ENV_VAR = "GPT_OSS_KIT_O200K_BASE"
FILE_NAME = "o200k_base.tiktoken"


# --- the ranks file -------------------------------------------------------------------------------


def _candidates(path) -> list[tuple[str, Path | None]]:
    """Where o200k_base.tiktoken may be, in resolution order: (how it was named, path or None)."""
    if path is not None:
        return [("path argument", Path(path))]
    found = []
    if os.environ.get(ENV_VAR):
        found.append((f"${ENV_VAR}", Path(os.environ[ENV_VAR])))
    if os.environ.get("TIKTOKEN_ENCODINGS_BASE"):
        found.append(("$TIKTOKEN_ENCODINGS_BASE", Path(os.environ["TIKTOKEN_ENCODINGS_BASE"]) / FILE_NAME))
    found.append(("bpe-openai package data", _packaged_path()))
    return found


def _packaged_path() -> Path | None:
    # find_spec, not importlib.resources: importing bpe_openai parses two vocabularies (about a second).
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or not spec.submodule_search_locations:
        return None  # bpe-openai not installed
    return Path(spec.submodule_search_locations[0]) / "data" / (FILE_NAME + ".gz")


def _resolve(path=None) -> Path:
    tried = []
    for how, p in _candidates(path):
        if p is not None and p.is_file():
            return p
        tried.append(f"{how}: {p}")
    raise FileNotFoundError(
        "o200k_base.tiktoken not found; tried, in order:\n  "
        + "\n  ".join(tried)
        + f"\nSet {ENV_VAR} to the file, or install bpe-openai==0.1.4 which ships it."
    )


@functools.lru_cache(maxsize=None)
def _verified_bytes(resolved: Path) -> bytes:
    data = resolved.read_bytes()
    if resolved.suffix == ".gz":
        data = gzip.decompress(data)
    actual = hashlib.sha256(data).hexdigest()
    if actual != O200K_BASE_SHA256:
        raise ValueError(
            f"{resolved} is not o200k_base.tiktoken: sha256 {actual} (of the decompressed bytes), "
            f"expected {O200K_BASE_SHA256}"
        )
    return data


def o200k_base_bytes(path: str | os.PathLike | None = None) -> bytes:
    """The sha256-checked bytes of o200k_base.tiktoken (decompressed where the source is .gz)."""
    return _verified_bytes(_resolve(path))


def write_o200k_base(folder: str | os.PathLike) -> Path:
    """Write the checked file as folder/o200k_base.tiktoken, e.g. for TIKTOKEN_ENCODINGS_BASE."""
    out = Path(folder) / FILE_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(o200k_base_bytes())
    return out


@functools.lru_cache(maxsize=None)
def _parsed(resolved: Path) -> dict[bytes, int]:
    ranks = {}
    for line in _verified_bytes(resolved).splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def load_o200k_base(path: str | os.PathLike | None = None) -> dict[bytes, int]:
    """token bytes -> rank. Order: `path`, $GPT_OSS_KIT_O200K_BASE, $TIKTOKEN_ENCODINGS_BASE/, bpe-openai.
    The dict is cached and shared: do not mutate it."""
    return _parsed(_resolve(path))


# --- argument checks shared with harmony/tokenizer.py, so both fail the same way ------------------


def check_token_ids(tokens) -> list[int]:
    """tokens as a list of ints in [0, N_VOCAB), or a ValueError naming the first bad id and its position."""
    ids = list(tokens)
    if all(type(t) is int and 0 <= t < N_VOCAB for t in ids):
        return ids
    for pos, t in enumerate(ids):
        try:
            ok = not isinstance(t, bool) and 0 <= operator.index(t) < N_VOCAB
        except TypeError:
            ok = False
        if not ok:
            raise ValueError(f"token id {t!r} at position {pos} is not an integer in [0, {N_VOCAB})")
        ids[pos] = operator.index(t)
    return ids


def resolve_allowed_special(allowed_special) -> frozenset[str]:
    """'all' or a collection of special-token names -> frozenset; unknown names are a ValueError (a typo
    would otherwise silently encode the token as plain text)."""
    if allowed_special == "all":
        return frozenset(SPECIAL_TOKENS)
    if isinstance(allowed_special, (str, bytes)):
        raise ValueError(f"allowed_special must be 'all' or a collection of names, not {allowed_special!r}")
    names = frozenset(allowed_special)
    unknown = sorted(n for n in names if n not in SPECIAL_TOKENS)
    if unknown:
        raise ValueError(f"not o200k_harmony special tokens: {unknown}")
    return names


# --- the tokenizer --------------------------------------------------------------------------------


def bpe(piece: bytes, ranks: dict[bytes, int]) -> list[int]:
    """tiktoken's byte pair merge: keep merging the adjacent pair whose concatenation has the lowest
    rank, leftmost first on ties, until no pair is a token."""
    if piece in ranks:
        return [ranks[piece]]
    # Parts are byte spans; nxt[s] is where the part starting at s ends. tiktoken rescans every pair after
    # each merge (quadratic: hours in Python on a 100k-letter word); a heap keyed (rank, start) pops the
    # same pair, as starts are in order, and stale entries are skipped when their span no longer exists.
    n = len(piece)
    nxt = list(range(1, n + 1))
    prv = list(range(-1, n - 1))
    alive = [True] * n

    def push(s):
        if nxt[s] < n:
            rank = ranks.get(piece[s : nxt[nxt[s]]])
            if rank is not None:
                heapq.heappush(heap, (rank, s, nxt[nxt[s]]))

    heap = []
    for s in range(n - 1):
        push(s)
    while heap:
        _, s, end = heapq.heappop(heap)
        if not alive[s] or nxt[s] >= n or nxt[nxt[s]] != end:
            continue  # stale: one of the two parts has merged with something else since
        gone = nxt[s]
        alive[gone] = False
        nxt[s] = end
        if end < n:
            prv[end] = s
        push(s)
        if prv[s] >= 0:
            push(prv[s])
    out, s = [], 0
    while s < n:
        out.append(ranks[piece[s : nxt[s]]])
        s = nxt[s]
    return out


def _utf8_safe(text: str) -> str:
    if not isinstance(text, str):
        raise TypeError(f"text must be str, not {type(text).__name__}")
    # Lone surrogates cannot be UTF-8; tiktoken pairs up what it can and replaces the rest with U+FFFD.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


@functools.lru_cache(maxsize=64)
def _specials_regex(allowed: frozenset[str]) -> regex.Pattern:
    return regex.compile("|".join(regex.escape(name) for name in sorted(allowed)))


class Tokenizer:
    """o200k_harmony. encode() treats special-token text as plain text unless allowed_special names it:
    a user typing "<|end|>" must never produce token 200007."""

    def __init__(self, ranks: dict[bytes, int] | None = None):
        self._ranks = load_o200k_base() if ranks is None else ranks
        self._decoder = {rank: token for token, rank in self._ranks.items()}
        self._decoder.update({i: name.encode() for name, i in SPECIAL_TOKENS.items()})
        self._pattern = regex.compile(PATTERN)

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(SPECIAL_TOKENS)

    @property
    def n_vocab(self) -> int:
        return N_VOCAB

    def is_special(self, token: int) -> bool:
        return check_token_ids([token])[0] >= 199998

    def encode_ordinary(self, text: str) -> list[int]:
        text = _utf8_safe(text)
        out = []
        for piece in self._pattern.findall(text):
            out += bpe(piece.encode("utf-8"), self._ranks)
        return out

    def encode(self, text: str, allowed_special=frozenset()) -> list[int]:
        allowed = resolve_allowed_special(allowed_special)
        text = _utf8_safe(text)
        if not allowed:
            return self.encode_ordinary(text)
        # Split at allowed special names, then pre-tokenize each stretch between them on its own,
        # as tiktoken does (so `\s+(?!\S)` sees the stretch end, not the special that follows).
        out, start = [], 0
        for m in _specials_regex(allowed).finditer(text):
            out += self.encode_ordinary(text[start : m.start()])
            out.append(SPECIAL_TOKENS[m.group()])
            start = m.end()
        return out + self.encode_ordinary(text[start:])

    def decode_bytes(self, tokens) -> bytes:
        decoder = self._decoder
        ids = check_token_ids(tokens)
        for pos, t in enumerate(ids):
            if t not in decoder:  # only reachable with custom ranks that leave holes
                raise ValueError(f"token id {t!r} at position {pos} is not in this vocabulary")
        return b"".join(decoder[t] for t in ids)

    def decode(self, tokens) -> str:
        # Lossy like tiktoken's default: bytes that are not UTF-8 (a token can end mid-character) become U+FFFD.
        return self.decode_bytes(tokens).decode("utf-8", errors="replace")

    def decode_single_token_bytes(self, token: int) -> bytes:
        return self.decode_bytes([token])


@functools.lru_cache(maxsize=1)
def get_tokenizer() -> Tokenizer:
    return Tokenizer()
