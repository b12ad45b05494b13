"""HarmonyEncoding: the object users hold, with openai-harmony's method names and call shapes.

What it is: the drop-in entry point (`load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)`),
wiring the tokenizer (harmony/tokenizer.py, o200k_harmony) to render.py and parse.py. What it is not:
a dependency on openai-harmony or torch; nothing here downloads anything.
Source: openai_harmony/__init__.py 0.0.8 (signatures) and openai/harmony src/registry.rs (stop tokens).

Differences from openai-harmony, on purpose: errors are harmony.HarmonyError everywhere (a ValueError and
a RuntimeError); `<|reserved_201088|>` is out of range (the model's embedding has 201088 rows); render
methods also accept a plain list of messages and roles as strings.
"""

import operator
import re
from dataclasses import dataclass
from enum import Enum
from typing import AbstractSet, Collection, Literal, Optional, Sequence, Union

from . import render as _render
from .chat import Conversation, Message, Role
from .errors import HarmonyError
from .parse import STOP_TOKENS, StreamableParser
from .tokenizer import get_tokenizer


def raise_disallowed_special_token(token: str) -> None:
    """openai_harmony's helper, same message: special-token text reached encode() without being allowed."""
    raise HarmonyError(
        "Encountered text corresponding to disallowed special token "
        f"{token!r}.\n"
        "If you want this text to be encoded as a special token, "
        f"pass it to `allowed_special`, e.g. `allowed_special={{'{token}', ...}}`.\n"
        "If you want this text to be encoded as normal text, disable the check for this token "
        f"by passing `disallowed_special=(enc.special_tokens_set - {{'{token}'}})`.\n"
        "To disable this check for all special tokens, pass `disallowed_special=()`.\n"
    )


class HarmonyEncodingName(str, Enum):
    HARMONY_GPT_OSS = "HarmonyGptOss"

    def __str__(self) -> str:
        return str(self.value)


@dataclass
class RenderConversationConfig:
    auto_drop_analysis: bool = True  # drop earlier analysis once the conversation ends on a final answer


@dataclass
class RenderOptions:
    conversation_has_function_tools: bool = False


_INTEGER_DTYPES = frozenset(f"{u}int{bits}" for u in ("", "u") for bits in (8, 16, 32, 64))


class _Vocab:
    """The tokenizer as the renderer and parser need it: errors become HarmonyError with a position."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.n_vocab = tokenizer.n_vocab
        self.encode_ordinary = tokenizer.encode_ordinary
        self.decode_single = tokenizer.decode_single_token_bytes

    def check_id(self, token, pos) -> int:
        """A token id as openai-harmony reads one (PyO3's u32): anything with __index__ (int, bool, numpy
        integer scalars, integer tensors of one element) in [0, 2**32); ids past the vocabulary are content."""
        if type(token) is not int:
            try:
                token = operator.index(token)
            except TypeError:
                shown = " ".join(repr(token).split())[:60]  # one line, even for a tensor
                raise HarmonyError(f"token must be an integer, not {type(token).__name__} ({shown})", pos) from None
        if token < 0 or token >= 2**32:  # what a u32 can hold; larger ids are out-of-vocabulary content
            raise HarmonyError(f"token id {token} is not a valid token id (not in [0, 2**32))", pos)
        return token

    def check_ids(self, tokens) -> list[int]:
        """A whole completion as token ids, checked before any is parsed (as openai-harmony converts first)."""
        if getattr(tokens, "ndim", None) == 1 and str(tokens.dtype).removeprefix("torch.") in _INTEGER_DTYPES:
            tokens = tokens.tolist()  # a numpy array or torch tensor of integers: one call, not one per element
        try:
            ids = tokens if type(tokens) is list else list(tokens)
        except TypeError:
            raise HarmonyError(f"tokens must be a sequence of token ids, not {type(tokens).__name__}") from None
        if all(type(t) is int and 0 <= t < 2**32 for t in ids):
            return ids
        return [self.check_id(t, pos) for pos, t in enumerate(ids)]

    def token_bytes(self, token: int) -> Optional[bytes]:
        """One token's bytes, or None for an id outside the vocabulary."""
        if token >= self.n_vocab:
            return None
        try:
            return self.decode_single(token)
        except (ValueError, KeyError):
            return None

    def decode_bytes(self, tokens, pos) -> bytes:
        try:
            return self.tokenizer.decode_bytes(tokens)
        except (ValueError, KeyError) as e:
            raise HarmonyError(f"could not decode tokens: {e}", pos) from None


def _messages(conversation) -> list[Message]:
    return list(conversation.messages if isinstance(conversation, Conversation) else conversation)


def _auto_drop(config: Optional[RenderConversationConfig]) -> bool:
    return True if config is None else bool(config.auto_drop_analysis)


class HarmonyEncoding:
    def __init__(self, name: str = HarmonyEncodingName.HARMONY_GPT_OSS.value, tokenizer=None):
        self._name = str(name)
        self._vocab = _Vocab(get_tokenizer() if tokenizer is None else tokenizer)

    @property
    def name(self) -> str:
        return self._name

    @property
    def special_tokens_set(self) -> set[str]:
        return set(self._vocab.tokenizer.special_tokens)

    # --- rendering ----------------------------------------------------------------------------------

    def render_conversation_for_completion(
        self,
        conversation: Union[Conversation, Sequence[Message]],
        next_turn_role: Union[Role, str],
        config: Optional[RenderConversationConfig] = None,
    ) -> list[int]:
        """The prompt: the conversation, then `<|start|>{next_turn_role}` for the model to continue."""
        role = Role(next_turn_role)
        out = _render.render_conversation(self._vocab.encode_ordinary, _messages(conversation), _auto_drop(config))
        return out + [_render.START] + self._vocab.encode_ordinary(role.value)

    def render_conversation(
        self, conversation: Union[Conversation, Sequence[Message]], config: Optional[RenderConversationConfig] = None
    ) -> list[int]:
        return _render.render_conversation(self._vocab.encode_ordinary, _messages(conversation), _auto_drop(config))

    def render_conversation_for_training(
        self, conversation: Union[Conversation, Sequence[Message]], config: Optional[RenderConversationConfig] = None
    ) -> list[int]:
        return _render.render_for_training(self._vocab.encode_ordinary, _messages(conversation), _auto_drop(config))

    def render(self, message: Message, render_options: Optional[RenderOptions] = None) -> list[int]:
        fn_tools = render_options is not None and render_options.conversation_has_function_tools
        _render.check_representable([message])
        return _render.render_message(self._vocab.encode_ordinary, message, fn_tools)

    # --- parsing ------------------------------------------------------------------------------------

    def parse_messages_from_completion_tokens(
        self, tokens: Sequence[int], role: Optional[Role] = None, *, strict: bool = True
    ) -> list[Message]:
        """All messages in a finished completion. With `role`, tokens start after `<|start|>{role}`."""
        ids = self._vocab.check_ids(tokens)
        parser = StreamableParser(self, role, strict=strict)
        parser._feed(ids)
        parser.process_eos()
        return parser.messages

    # --- tokens -------------------------------------------------------------------------------------

    def decode_utf8(self, tokens: Sequence[int]) -> str:
        """Strict decode: invalid UTF-8 (a token boundary inside a character) is an error."""
        data = self._vocab.decode_bytes(list(tokens), None)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise HarmonyError(f"Could not decode tokens: invalid UTF-8 at byte {e.start}") from None

    def decode(self, tokens: Sequence[int], errors: str = "replace") -> str:
        return self._vocab.decode_bytes(list(tokens), None).decode("utf-8", errors=errors)

    def encode(
        self,
        text: str,
        *,
        allowed_special: Union[Literal["all"], AbstractSet[str]] = set(),
        disallowed_special: Union[Literal["all"], Collection[str]] = "all",
    ) -> list[int]:
        """tiktoken's contract: special-token text is an error unless allowed (then it is the special token)
        or explicitly not disallowed (then it is plain text)."""
        specials = self.special_tokens_set
        allowed = specials if allowed_special == "all" else set(allowed_special)
        disallowed = specials - allowed if disallowed_special == "all" else set(disallowed_special)
        if disallowed:
            match = re.search("|".join(map(re.escape, sorted(disallowed))), text)
            if match:
                raise_disallowed_special_token(match.group())
        try:
            return self._vocab.tokenizer.encode(text, allowed_special=frozenset(allowed))
        except ValueError as e:
            raise HarmonyError(str(e)) from None

    def is_special_token(self, token: int) -> bool:
        return isinstance(token, int) and 199998 <= token < self._vocab.n_vocab

    def stop_tokens(self) -> list[int]:
        """Where sampling stops: <|return|> (done), <|call|> (tool call), <|end|> (end of a message)."""
        return sorted(STOP_TOKENS)

    def stop_tokens_for_assistant_actions(self) -> list[int]:
        """Stop only when the assistant hands over: done (<|return|>) or calling a tool (<|call|>)."""
        return sorted({_render.RETURN, _render.CALL})


def load_harmony_encoding(
    name: Union[str, HarmonyEncodingName] = HarmonyEncodingName.HARMONY_GPT_OSS,
) -> HarmonyEncoding:
    name = str(name)
    if name != HarmonyEncodingName.HARMONY_GPT_OSS.value:
        raise HarmonyError(f"Invalid HarmonyEncodingName: {name}")
    return HarmonyEncoding(name)
