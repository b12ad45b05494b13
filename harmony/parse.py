"""Token ids -> messages, one token at a time: the streaming parser, and the header grammar it uses.

What it is: a behavioural port of openai/harmony's `StreamableParser` (src/encoding.rs), held to
openai-harmony 0.0.8 by tests/test_harmony_parse.py: same messages, same deltas, errors in the same places.
What it is not: a validator of what the model *should* say (any channel word is accepted, content is
never inspected), nor a renderer (render.py).

States:  ExpectStart --<|start|>--> Header --<|message|>--> Content --stop token or EOS--> ExpectStart.
With a `role` the parser starts in Header (the prompt already wrote `<|start|>assistant`).
Stop tokens are <|end|>, <|call|> and <|return|>; any other special token inside content is its text.

Lenient where the reference is (documented, tested):
- content: a token id outside the vocabulary, or bytes that are not UTF-8, become U+FFFD, never an error;
- strict=False: a stop token inside a header closes a malformed first message (when a role was given)
  whose unparsed header words become its text; without a role the fragment is dropped.
Errors are HarmonyError, naming the problem and the token position.
Linear in the completion's length, streamed or whole (tests/test_harmony_parse.py, harmony/README.md "Speed").
"""

import re
from enum import Enum
from typing import Any, Optional

from .chat import Author, Message, Role, TextContent
from .errors import HarmonyError
from .render import CONSTRAIN_TEXT, START, MESSAGE, END, CALL, RETURN

STOP_TOKENS = frozenset({END, CALL, RETURN})
REPLACEMENT = "\ufffd"
CHANNEL_TEXT = "<|channel|>"

# Rust's char::is_whitespace (Unicode White_Space); Python's str.isspace also counts \x1c-\x1f.
RUST_WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
)
_ASCII_WS_SPLIT = re.compile("[ \t\n\x0c\r]+")  # Rust's split_ascii_whitespace: no \x0b
_CHANNEL_END = re.compile("[<" + re.escape(RUST_WHITESPACE) + "]")


class StreamState(Enum):
    EXPECT_START = "ExpectStart"
    HEADER = "Header"
    CONTENT = "Content"


class Header:
    __slots__ = ("author", "recipient", "channel", "content_type")

    def __init__(self, author: Author, recipient=None, channel=None, content_type=None):
        self.author, self.recipient, self.channel, self.content_type = author, recipient, channel, content_type

    def to_dict(self) -> dict[str, Any]:
        author = {"role": self.author.role.value}
        if self.author.name is not None:
            author["name"] = self.author.name
        return {
            "author": author,
            "recipient": self.recipient,
            "channel": self.channel,
            "content_type": self.content_type,
        }


def parse_header(text: str, role: Optional[Role], split_recipient: bool, pos: int) -> tuple[Header, Optional[str]]:
    """Header text (between <|start|> and <|message|>, specials as text) -> (Header, leftover words)."""
    channel = None
    idx = text.find(CHANNEL_TEXT)
    if idx >= 0:
        after = text[idx + len(CHANNEL_TEXT) :]
        m = _CHANNEL_END.search(after)
        end = m.start() if m else len(after)
        if end == 0:
            raise HarmonyError("channel marker present but no channel value found in header", pos)
        channel = after[:end]
        text = text[:idx] + after[end:]
    text = text.strip(RUST_WHITESPACE)
    if CONSTRAIN_TEXT in text:  # "to=f<|constrain|>json": the constraint is its own word
        text = text.replace(CONSTRAIN_TEXT, " " + CONSTRAIN_TEXT).strip(RUST_WHITESPACE)
    parts = [p for p in _ASCII_WS_SPLIT.split(text) if p]

    role_word = None
    if role is None:
        if not parts:
            raise HarmonyError("message header did not contain a role", pos)
        role_word = parts[0]
        if role_word in _ROLES:
            role = _ROLES[role_word]
        elif len(parts) > 1 or parts[0].startswith("to="):
            # An unknown first word with more after it is a tool's name: "functions.f to=assistant".
            parts.pop(0)
            role = Role.TOOL
        else:
            raise HarmonyError(f"Unknown role: {role_word}", pos)
    if parts and parts[0] == role.value:
        parts.pop(0)

    recipient = content_type = None
    if split_recipient and parts:
        n = len(parts)
        last = parts.pop()
        if last.startswith("to="):
            recipient = last[3:]
        elif n == 1:
            recipient = last  # a lone word is a recipient, not a content type (even `<|constrain|>json`)
        else:
            content_type = last
            if parts:
                raw = parts.pop()
                recipient = raw[3:] if raw.startswith("to=") else raw
    leftover = " ".join(parts) if parts else None
    author = Author(role=role, name=role_word if role is Role.TOOL else None)
    return Header(author, recipient, channel, content_type), leftover


_ROLES = {r.value: r for r in Role}


def _utf8(data: bytes, pos: int) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise HarmonyError(f"could not decode header: invalid UTF-8 ({e.reason})", pos) from None


def _first_utf8_error(data: bytearray) -> Optional[UnicodeDecodeError]:
    """The first UTF-8 error in data, or None, found by decoding growing prefixes of it, not all of it: the error
    object holds a copy of the bytes decoded, and invalid bytes can leave a backlog as long as the message (one
    invalid sequence is replaced per token, the bytes after it wait), so decoding it all per token is quadratic."""
    n = 256
    while True:
        try:
            (data if n >= len(data) else data[:n]).decode("utf-8")
        except UnicodeDecodeError as e:
            if n >= len(data) or e.reason != "unexpected end of data":  # not cut short by the prefix's end
                return e
        else:
            if n >= len(data):
                return None
        n *= 2


class StreamableParser:
    """Feed completion tokens one at a time; read role, channel, recipient and content as they arrive."""

    def __init__(self, encoding, role: Optional[Role], *, strict: bool = True):
        self._vocab = encoding._vocab
        self._strict = bool(strict)
        self._next_role = None if role is None else Role(role)
        self._state = StreamState.EXPECT_START if role is None else StreamState.HEADER
        self._tokens: list[int] = []
        self._messages: list[Message] = []
        self._header_tokens: list[int] = []
        self._header: Optional[Header] = None
        # The current message's text, in the pieces it was decoded in: joined when read (a str grown by `+=`
        # is copied each time: quadratic), and re-encoded piece by piece into state_data's content_tokens only
        # when that is read (as the reference does, but not on every token).
        self._pieces: list[str] = []
        self._joined = ""  # "".join(self._pieces) as of the last read
        self._n_joined = 0
        self._content_tokens: list[int] = []
        self._n_encoded = 0
        self._delta: Optional[str] = None
        self._poisoned = False  # an id outside the vocabulary: the rest of the message is one U+FFFD
        self._undecoded_bytes = bytearray()

    # --- feeding ------------------------------------------------------------------------------------

    def process(self, token: int) -> "StreamableParser":
        token = self._vocab.check_id(token, len(self._tokens))
        self._tokens.append(token)
        self._step(token, len(self._tokens) - 1)
        return self

    def _feed(self, ids: list[int]):
        """process() for ids already checked (the whole-completion parser); content tokens take a short path."""
        for token in ids:
            self._tokens.append(token)
            if self._state is StreamState.CONTENT and token not in STOP_TOKENS:
                self._decode_more(token)
            else:
                self._step(token, len(self._tokens) - 1)

    def process_eos(self) -> "StreamableParser":
        self._step(None, len(self._tokens))
        return self

    def _step(self, token: Optional[int], pos: int):
        if self._state is StreamState.EXPECT_START:
            if token is None:  # EOS right after a stop token is a normal end
                return
            if token != START:
                raise HarmonyError(f"Unexpected token {token} while expecting start token {START}", pos)
            self._state, self._header_tokens = StreamState.HEADER, []
        elif self._state is StreamState.HEADER:
            self._header_step(token, pos)
        else:
            self._content_step(token, pos)

    def _header_step(self, token: Optional[int], pos: int):
        if token is None:
            raise HarmonyError("Unexpected EOS while waiting for message header to complete", pos)
        if token == MESSAGE:
            self._state = StreamState.EXPECT_START  # as the reference: a bad header leaves us expecting <|start|>
            text = _utf8(self._vocab.decode_bytes(self._header_tokens, pos), pos)
            header, leftover = parse_header(text, self._next_role, True, pos)
            if leftover is not None:
                raise HarmonyError(f"unexpected tokens remaining in message header: {leftover!r}", pos)
            self._next_role = None
            self._state, self._header = StreamState.CONTENT, header
            self._pieces, self._joined, self._n_joined = [], "", 0
            self._content_tokens, self._n_encoded = [], 0
        elif not self._strict and token in STOP_TOKENS:
            if self._next_role is not None and self._header_tokens:
                text = _utf8(self._vocab.decode_bytes(self._header_tokens, pos), pos)
                header, leftover = parse_header(text, self._next_role, False, pos)
                self._messages.append(self._message(header, leftover or ""))
            self._state, self._next_role = StreamState.EXPECT_START, None
        else:
            self._header_tokens.append(token)

    def _content_step(self, token: Optional[int], pos: int):
        if token is not None and token not in STOP_TOKENS:
            self._decode_more(token)
            return
        text = self._text() + (REPLACEMENT if self._poisoned else "")
        text += self._undecoded_bytes.decode("utf-8", errors="replace")
        self._messages.append(self._message(self._header, text))
        self._state, self._header, self._delta = StreamState.EXPECT_START, None, None
        self._poisoned, self._undecoded_bytes = False, bytearray()

    def _decode_more(self, token: int):
        """Append a content token; emit whatever complete UTF-8 it finishes (a character can span tokens)."""
        data = None if self._poisoned else self._vocab.token_bytes(token)
        if data is None:
            # An id outside the vocabulary: it stays undecodable (and so does all content after it) and
            # becomes one U+FFFD at the end of the message, as in the reference.
            self._poisoned, self._delta = True, None
            return
        if not self._undecoded_bytes:  # the common case: the token is whole characters
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                pass
            else:
                self._pieces.append(text)
                self._delta = text
                return
        self._undecoded_bytes += data
        e = _first_utf8_error(self._undecoded_bytes)
        if e is None:
            text = self._undecoded_bytes.decode("utf-8")
            self._pieces.append(text)
            self._delta = text
            self._undecoded_bytes.clear()
        else:
            incomplete = e.reason == "unexpected end of data" and e.end == len(self._undecoded_bytes)
            delta = ""
            if e.start > 0:
                delta = self._undecoded_bytes[: e.start].decode("utf-8")
                self._pieces.append(delta)
                del self._undecoded_bytes[: e.start]
            if incomplete:
                self._delta = None  # the character continues in the next token
            else:  # one invalid sequence becomes U+FFFD; bytes after it wait for the next token
                self._pieces.append(REPLACEMENT)
                delta += REPLACEMENT
                del self._undecoded_bytes[: e.end - e.start]
            if delta:
                self._delta = delta

    def _text(self) -> str:
        if self._n_joined < len(self._pieces):
            self._joined += "".join(self._pieces[self._n_joined :])
            self._n_joined = len(self._pieces)
        return self._joined

    def _tokens_of_content(self) -> list[int]:
        for piece in self._pieces[self._n_encoded :]:
            self._content_tokens += self._vocab.encode_ordinary(piece)
        self._n_encoded = len(self._pieces)
        return self._content_tokens

    @staticmethod
    def _message(header: Header, text: str) -> Message:
        return Message(
            author=header.author,
            content=[TextContent(text=text)],
            channel=header.channel,
            recipient=header.recipient,
            content_type=header.content_type,
        )

    # --- reading ------------------------------------------------------------------------------------

    @property
    def current_content(self) -> str:
        return self._text() if self._state is StreamState.CONTENT else ""

    @property
    def current_role(self) -> Optional[Role]:
        return self._header.author.role if self._state is StreamState.CONTENT else self._next_role

    @property
    def current_content_type(self) -> Optional[str]:
        return self._header.content_type if self._state is StreamState.CONTENT else None

    @property
    def current_recipient(self) -> Optional[str]:
        return self._header.recipient if self._state is StreamState.CONTENT else None

    @property
    def current_channel(self) -> Optional[str]:
        return self._header.channel if self._state is StreamState.CONTENT else None

    @property
    def last_content_delta(self) -> Optional[str]:
        return self._delta

    @property
    def messages(self) -> list[Message]:
        return list(self._messages)

    @property
    def tokens(self) -> list[int]:
        return list(self._tokens)

    @property
    def state(self) -> StreamState:
        return self._state

    @property
    def state_data(self) -> dict[str, Any]:
        if self._state is StreamState.EXPECT_START:
            return {"state": "ExpectStart"}
        if self._state is StreamState.HEADER:
            return {"state": "Header", "header_tokens": list(self._header_tokens)}
        return {"state": "Content", "header": self._header.to_dict(), "content_tokens": list(self._tokens_of_content())}
