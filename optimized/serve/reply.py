"""The model's reply, token by token, as the API's parts: reasoning, content and tool calls (harmony's parse).

What it is: harmony's StreamableParser over the completion (it starts after the prompt's `<|start|>assistant`) and
the rule that maps its messages to the API:
  - channel `analysis` -> reasoning (returned as `reasoning_content` / a reasoning item; never as content, and
    never fed back as final text: chat.py renders it back only as an analysis message);
  - a message with a recipient (`to=functions.get_weather`, on `commentary`) -> a tool call, name without the
    `functions.` namespace, its content the JSON arguments;
  - everything else (`final`, a `commentary` preamble with no recipient) -> content.
What it is not: a validator of the arguments' JSON (they are returned as the model wrote them).
A reply that is not harmony (a random-weight model writes such; a reply cut by max_tokens inside a header): from the
token where parsing fails, the text of the whole message in progress and of every later token is content, raw
(special tokens as their text), and `malformed` holds the parser's error. Messages parsed before it keep their
parts; a streamed reply sends the same text (nothing of a message is sent while its header is being read).
"""
import uuid

from harmony import HarmonyError, Role, StreamableParser

from optimized.serve.text import TextStream


class Reply:
    def __init__(self, encoding, prefix=()):
        """prefix: header tokens the server wrote after `<|start|>assistant` (a forced tool call)."""
        self.parser = StreamableParser(encoding, role=Role.ASSISTANT)
        self.tokens: list[int] = []
        self.reasoning, self.content = [], []
        self.calls: list[dict] = []  # {"id", "name", "arguments"} in order
        self.reasoning_tokens = 0
        self.malformed: str | None = None
        self._start = 0  # index in self.tokens where the message in progress began
        self._msg = 0  # messages completed so far
        self._call_of_msg: dict[int, int] = {}
        self._raw: TextStream | None = None
        self._generated = 0
        for t in prefix:
            self._process(t)

    def feed(self, token: int) -> list[tuple]:
        """Parts this token adds: ("reasoning", text), ("content", text), ("call", index, id, name) when a tool call
        starts, ("arguments", index, text)."""
        self._generated += 1
        return self._process(token)

    def finish(self) -> list[tuple]:
        """End of the completion (a stop token, max_tokens or cancellation)."""
        if self._raw is not None:
            tail = self._raw.flush()
            return self._add("content", tail) if tail else []
        try:
            self.parser.process_eos()
        except HarmonyError as e:
            return self._go_raw(e, [])
        return self._closed()

    def _process(self, token: int) -> list[tuple]:
        self.tokens.append(token)
        if self._raw is not None:
            return self._add("content", self._raw.feed(token))
        try:
            self.parser.process(token)
        except HarmonyError as e:
            return self._go_raw(e, [])
        if self.parser.current_channel == "analysis" and self._generated:
            self.reasoning_tokens += 1
        out = []
        delta = self.parser.last_content_delta
        if delta:
            recipient = self.parser.current_recipient
            if recipient not in (None, "all", "assistant"):
                out += self._call(self._msg, recipient)
                out += [("arguments", self._call_of_msg[self._msg], delta)]
                self.calls[self._call_of_msg[self._msg]]["arguments"] += delta
            elif self.parser.current_channel == "analysis":
                out += self._add("reasoning", delta)
            else:
                out += self._add("content", delta)
        return out + self._closed()

    def _closed(self) -> list[tuple]:
        """Messages the parser completed since the last call (a tool call with no arguments is still a call)."""
        out = []
        while self._msg < len(self.parser.messages):
            message = self.parser.messages[self._msg]
            if message.recipient not in (None, "all", "assistant"):
                out += self._call(self._msg, message.recipient)
            self._msg += 1
            self._start = len(self.tokens)
        return out

    def _call(self, msg: int, recipient: str) -> list[tuple]:
        if msg in self._call_of_msg:
            return []
        index = self._call_of_msg[msg] = len(self.calls)
        name = recipient.removeprefix("functions.")
        call_id = f"call_{uuid.uuid4().hex[:24]}"
        self.calls.append({"id": call_id, "name": name, "arguments": ""})
        return [("call", index, call_id, name)]

    def _go_raw(self, error: HarmonyError, out: list[tuple]) -> list[tuple]:
        self.malformed = str(error)
        self._raw = TextStream()
        text = "".join(self._raw.feed(t) for t in self.tokens[self._start:])
        return out + (self._add("content", text) if text else [])

    def _add(self, kind: str, text: str) -> list[tuple]:
        if not text:
            return []
        (self.reasoning if kind == "reasoning" else self.content).append(text)
        return [(kind, text)]

    @property
    def finished_call(self) -> bool:
        """The reply ended by handing a tool call over (<|call|>) rather than answering."""
        return bool(self.calls) and self._raw is None
