"""The files beside the weights that an HF-layout loader (transformers, vLLM, SGLang, llama.cpp's converter) reads:
`tokenizer.json`, `tokenizer_config.json`, `generation_config.json`. Written for the real-shape golden tier.

What this is: o200k_harmony as a `tokenizers` BPE, built offline from the sha256-checked o200k_base ranks
(reference/tokenizer.py) and harmony's 1090 special ids, by transformers' own tiktoken conversion
(`TikTokenConverter`: every merge is a split of a token into two tokens, ordered by the merged token's rank;
ByteLevel after tiktoken's pattern). `check_tokenizer_json` holds it to the repository's tokenizer on
golden/data/text/vectors.json. Values of the configs as in openai/gpt-oss-20b's HF repository (2025-08).
What it is not: the released files byte for byte. In particular there is no `chat_template`: the release's
harmony Jinja template is not available offline and a hand-written one would be a second, unchecked renderer
(harmony/ is the renderer this kit certifies). Loaders that need a prompt get token ids.

Sources: transformers `convert_slow_tokenizer.TikTokenConverter`; tiktoken `_byte_pair_merge`; the gpt-oss
model card (o200k_harmony, 201,088 ids); harmony/encoding.py (stop tokens).
"""
import functools
import json
from pathlib import Path

from reference.tokenizer import N_VOCAB, PATTERN, SPECIAL_TOKENS, load_o200k_base

BOS, EOS, PAD = "<|startoftext|>", "<|return|>", "<|endoftext|>"
# generation stops at <|return|> (done), <|endoftext|>, <|call|> (a tool call): the release's eos_token_id list
GENERATION_EOS = [200002, 199999, 200012]


@functools.lru_cache(maxsize=1)
def tokenizer_json() -> str:
    """tokenizer.json text (deterministic: the converter's output serialized by tokenizers)."""
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class _Ranks(TikTokenConverter):  # the ranks from the kit's checked copy, not a download or a file path
        @staticmethod
        def load_tiktoken_bpe(_):
            return load_o200k_base()

    specials = sorted(SPECIAL_TOKENS, key=SPECIAL_TOKENS.get)  # ids 199998..201087 in order, after the ranks
    tok = _Ranks(vocab_file="o200k_base", pattern=PATTERN, extra_special_tokens=specials).converted()
    for name in specials[:3]:
        assert tok.token_to_id(name) == SPECIAL_TOKENS[name], (name, tok.token_to_id(name))
    assert tok.get_vocab_size(with_added_tokens=True) == N_VOCAB
    return tok.to_str(pretty=False)


def tokenizer_config() -> dict:
    added = {str(i): {"content": name, "lstrip": False, "normalized": False, "rstrip": False,
                      "single_word": False, "special": True}
             for name, i in sorted(SPECIAL_TOKENS.items(), key=lambda kv: kv[1])}
    return {"added_tokens_decoder": added, "bos_token": BOS, "eos_token": EOS, "pad_token": PAD,
            "clean_up_tokenization_spaces": False, "extra_special_tokens": {},
            "model_input_names": ["input_ids", "attention_mask"], "model_max_length": 1000000000000000019884624838656,
            "tokenizer_class": "PreTrainedTokenizerFast"}


def generation_config() -> dict:
    return {"bos_token_id": SPECIAL_TOKENS[BOS], "do_sample": True, "eos_token_id": GENERATION_EOS,
            "pad_token_id": SPECIAL_TOKENS[PAD], "transformers_version": "4.55.0"}


def write(dst: Path) -> list[Path]:
    """The three files into dst (an HF-layout checkpoint folder)."""
    dst = Path(dst)
    out = [dst / "tokenizer.json", dst / "tokenizer_config.json", dst / "generation_config.json"]
    out[0].write_text(tokenizer_json())
    for p, obj in zip(out[1:], (tokenizer_config(), generation_config())):
        p.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    return out


def check_tokenizer_json(path: Path, vectors: dict) -> list[str]:
    """Differences between tokenizer.json (read by `tokenizers`) and the golden text vectors: encode of the
    `tokenizer_special` texts (special names are the specials, as in HF, which always matches added tokens),
    of the `tokenizer` texts that hold no special name (HF cannot encode a special's name as text), and the
    bytes of every `detokenize` case. Empty when they agree."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(path))
    bad = []
    texts = vectors["tokenizer_special"] + [v for v in vectors["tokenizer"]
                                            if not any(name in v["text"] for name in SPECIAL_TOKENS)]
    for v in texts:
        got = tok.encode(v["text"], add_special_tokens=False).ids
        if got != v["tokens"]:
            bad.append(f"encode {v['text'][:40]!r}: {got[:8]}..., expected {v['tokens'][:8]}...")
    byte_of = {c: b for b, c in _bytes_to_unicode().items()}
    for v in vectors["detokenize"]:
        pieces = [tok.id_to_token(t) for t in v["tokens"]]
        got = b"".join(p.encode() if t >= 199998 else bytes(byte_of[c] for c in p) for t, p in zip(v["tokens"], pieces))
        if got.hex() != v["bytes_hex"]:
            bad.append(f"decode {v['tokens'][:8]}: {got[:20]!r}, expected {bytes.fromhex(v['bytes_hex'])[:20]!r}")
    return bad


def _bytes_to_unicode() -> dict[int, str]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    return bytes_to_unicode()
