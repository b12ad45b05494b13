"""Token ids -> text for the API: incremental UTF-8, stop strings, and the legacy completions logprobs object.

Every checkpoint this engine serves uses o200k_harmony (harmony.tokenizer); a small test checkpoint's ids (e.g. the
bundled tiny one's 512) are o200k's first ids, so they decode too. A character split across tokens is emitted
once it is complete (an incremental decoder), so a stream's deltas join to exactly the text of the whole reply;
bytes that are not UTF-8 become U+FFFD, never an error. Special tokens decode to their text (`<|start|>`).
"""
import codecs

from harmony.tokenizer import get_tokenizer


def token_bytes(token: int) -> bytes:
    try:
        return get_tokenizer().decode_single_token_bytes(token)
    except (KeyError, ValueError):  # an id without bytes in o200k_harmony (a reserved id)
        return b"\xef\xbf\xbd"


def token_text(token: int) -> str:
    return token_bytes(token).decode("utf-8", errors="replace")


class TextStream:
    """feed(token) -> the text that token completes ('' while a character is still split)."""

    def __init__(self):
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token: int) -> str:
        return self._dec.decode(token_bytes(token))

    def flush(self) -> str:
        return self._dec.decode(b"", final=True)


def decode(tokens) -> str:
    s = TextStream()
    return "".join(s.feed(t) for t in tokens) + s.flush()


class StopStrings:
    """Text arrives in pieces; `push` returns what may be sent now, holding back a tail that could still become a
    stop string, and sets `hit` when one appears (the text is cut before it, as OpenAI's API does)."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.pending, self.hit = "", False

    def push(self, piece: str) -> str:
        if not self.stops:
            return piece
        text = self.pending + piece
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.pending, self.hit = "", True
            return text[:cut]
        keep = max((n for s in self.stops for n in range(1, len(s)) if text.endswith(s[:n])), default=0)
        self.pending = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep]

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


class LegacyLogprobs:
    """The /v1/completions `logprobs` object: tokens, token_logprobs, top_logprobs (token text -> logprob) and
    text_offset, appended token by token (prompt tokens first when echoed)."""

    def __init__(self, offset: int = 0, as_ids: bool = False):
        self.offset, self.as_ids = offset, as_ids  # as_ids: vLLM's return_tokens_as_token_ids ("token_id:N")
        self.data = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}

    def name(self, token: int) -> str:  # texts collide (bytes that are not UTF-8 all read U+FFFD); ids do not
        return f"token_id:{token}" if self.as_ids else token_text(token)

    def add(self, token: int, logprob, top):
        text = token_text(token)
        d = self.data
        d["tokens"].append(self.name(token))
        d["token_logprobs"].append(logprob)
        d["top_logprobs"].append(None if top is None else {self.name(i): p for i, p in top})
        d["text_offset"].append(self.offset)
        self.offset += len(text)

    def since(self, n: int) -> dict:
        return {k: v[n:] for k, v in self.data.items()}

    def __len__(self):
        return len(self.data["tokens"])
