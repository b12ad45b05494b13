"""o200k_harmony on tiktoken: the fast tokenizer, same API and errors as reference/tokenizer.py.

It is a thin wrapper: ranks, pattern, special tokens and argument checks all come from the reference
module, so the two can only differ in the BPE and regex engines, which tests/test_tokenizer.py compares
(with openai-harmony 0.0.8 as a third opinion). It does not download anything: the ranks file is the
sha256-checked copy found by reference.tokenizer.load_o200k_base.

Usage:  tok = get_tokenizer(); tok.encode("<|start|>user", allowed_special={"<|start|>"})
"""

import functools

import tiktoken

from reference.tokenizer import (
    N_VOCAB,
    PATTERN,
    SPECIAL_TOKENS,
    check_token_ids,
    load_o200k_base,
    resolve_allowed_special,
)

__all__ = ["N_VOCAB", "PATTERN", "SPECIAL_TOKENS", "Tokenizer", "get_tokenizer"]


class Tokenizer:
    """o200k_harmony. encode() treats special-token text as plain text unless allowed_special names it:
    a user typing "<|end|>" must never produce token 200007."""

    def __init__(self, ranks: dict[bytes, int] | None = None):
        ranks = load_o200k_base() if ranks is None else ranks
        self._enc = tiktoken.Encoding(
            name="o200k_harmony",
            pat_str=PATTERN,
            mergeable_ranks=ranks,
            special_tokens=SPECIAL_TOKENS,
        )

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(SPECIAL_TOKENS)

    @property
    def n_vocab(self) -> int:
        return N_VOCAB

    def is_special(self, token: int) -> bool:
        return check_token_ids([token])[0] >= 199998

    def encode_ordinary(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be str, not {type(text).__name__}")
        return self._enc.encode_ordinary(text)

    def encode(self, text: str, allowed_special=frozenset()) -> list[int]:
        allowed = resolve_allowed_special(allowed_special)
        if not isinstance(text, str):
            raise TypeError(f"text must be str, not {type(text).__name__}")
        # disallowed_special=(): tiktoken's default raises on special-token text; here it is plain text.
        return self._enc.encode(text, allowed_special=allowed, disallowed_special=())

    def decode_bytes(self, tokens) -> bytes:
        return self._enc.decode_bytes(check_token_ids(tokens))

    def decode(self, tokens) -> str:
        # Lossy like tiktoken's default: bytes that are not UTF-8 (a token can end mid-character) become U+FFFD.
        return self._enc.decode(check_token_ids(tokens), errors="replace")

    def decode_single_token_bytes(self, token: int) -> bytes:
        if type(token) is int and 0 <= token < N_VOCAB:  # the parser's per-token path: skip the list check
            return self._enc.decode_single_token_bytes(token)
        return self._enc.decode_single_token_bytes(check_token_ids([token])[0])


@functools.lru_cache(maxsize=1)
def get_tokenizer() -> Tokenizer:
    return Tokenizer()
