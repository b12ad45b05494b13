"""Command line: `python -m optimized chat|generate|serve [--checkpoint PATH] [--device cpu|cuda] [--dtype bf16|fp32]
[--activations int8] [--max-new-tokens N] [--temperature T] [--top-p P] [--seed S]`.

generate: `--tokens 1,2,3` (any checkpoint) or `--prompt TEXT` (o200k_harmony text; needs the full vocabulary);
          prints the new ids (and text when the vocabulary is the real one) and tokens/s.
chat:     renders the conversation with harmony, streams the reply's channels (analysis, then final) as they
          are parsed, and shows tokens/s. `--message TEXT` for one turn, otherwise one turn per stdin line.
serve:    an OpenAI-compatible HTTP API (optimized/serve/; `--host`, `--port`, `--max-batch` ...; needs the
          `serve` extra).
Without --checkpoint it runs on the bundled tiny checkpoint (random weights, vocabulary 512) and says so.
Chat on a vocabulary smaller than harmony's is refused: harmony's special tokens (<|start|> = 200006 ...) have
no ids there, and folding them into 512 ids would be a made-up model, not this one; use `generate --tokens`.
Errors (arguments, the checkpoint, a request, non-finite logits) are one line on stderr and exit status 2
(reference/cli.py); --debug shows the traceback.
"""
import sys
from pathlib import Path

import torch

from optimized.generate import Engine, RequestError
from optimized.moe import ACTIVATIONS
from optimized.sampling import Sampling
from reference import cli
from reference.tokens import check_tokens

TINY = Path(__file__).resolve().parent.parent / "golden" / "data" / "checkpoints" / "tiny"
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def parse_args(argv):
    ap = cli.ArgumentParser(prog="python -m optimized", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("chat", "generate", "serve"):
        p = sub.add_parser(name)
        p.add_argument("--checkpoint", help="checkpoint folder (original or HF layout); default: bundled tiny")
        p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
        p.add_argument("--dtype", default="bf16", choices=list(DTYPES))
        p.add_argument("--backend", default="torch", choices=["torch", "triton"])
        p.add_argument("--activations", default=None, choices=list(ACTIVATIONS),
                       help="round the experts' inputs to int8 (Q8_0) as llama.cpp's CPU path does: faster on CPU, "
                            "not the released precision (the kit's class bfloat16+int8, or float32+int8 with "
                            "--dtype fp32); default: off")
        if name != "serve":  # a server takes these per request
            p.add_argument("--max-new-tokens", type=cli.integer(0), default=64)
            p.add_argument("--temperature", type=cli.number(0), default=1.0, help="0: greedy")
            p.add_argument("--top-p", type=cli.number(0, 1, lo_open=True), default=1.0)
            p.add_argument("--seed", type=cli.integer(0, 2**64 - 1), default=None)
        p.add_argument("--context", type=cli.integer(1), default=4096, help="KV cache positions per sequence")
        cli.add_debug(p)
        if name == "serve":
            from optimized.serve import add_arguments
            add_arguments(p)
        elif name == "generate":
            p.add_argument("--tokens", type=cli.token_ids, help="comma-separated prompt ids, e.g. 1,2,3")
            p.add_argument("--prompt", help="prompt text (o200k_harmony; needs the full vocabulary)")
        else:
            p.add_argument("--message", help="one user message (otherwise: one turn per line of stdin)")
            p.add_argument("--system", default=None, help="model identity line of the system message")
            p.add_argument("--reasoning-effort", default="medium", choices=["low", "medium", "high"])
    return ap.parse_args(argv)


def harmony_fits(vocab_size: int, encoding) -> bool:
    special = [encoding.encode(s, allowed_special="all")[0] for s in ("<|start|>", "<|return|>", "<|call|>")]
    return vocab_size >= 200000 and max(special) < vocab_size  # text ids of o200k run to 199997


def rate(n: int, s: float) -> str:
    return f"{n / s:.1f} tok/s" if s > 0 else "-"


class ChannelPrinter:
    """Streams a reply as harmony parses it: a `[channel]` header whenever the channel changes, then the text.
    Tokens that do not parse as harmony (a random-weight model emits such) are shown raw, never dropped."""

    def __init__(self, encoding, parser, out=None):
        self.enc, self.parser, self.out = encoding, parser, out or sys.stdout
        self.channel, self.raw, self.shown = None, [], False

    def feed(self, token: int):
        if self.raw:  # the parse already failed: keep the rest raw
            self.raw.append(token)
            return
        try:
            self.parser.process(token)
        except Exception as e:  # HarmonyError: not the format; say so once and go raw
            print(f"\n[unparsed: {e}]", file=self.out)
            self.raw.append(token)
            return
        delta = self.parser.last_content_delta
        if delta:
            if self.parser.current_channel != self.channel or not self.shown:
                self.channel, self.shown = self.parser.current_channel, True
                print(f"\n[{self.channel or 'message'}] ", end="", file=self.out)
            print(delta, end="", file=self.out, flush=True)

    def finish(self):
        if self.raw:
            print(f"[raw] {self.enc.decode(self.raw)!r}", file=self.out)
        elif not self.shown:
            print(f"\n[no message content; tokens: {self.enc.decode(self.parser.tokens)!r}]", file=self.out)


def cmd_generate(args, engine, vocab):
    if (args.tokens is None) == (args.prompt is None):
        raise cli.Failure("generate: give exactly one of --tokens 1,2,3 or --prompt TEXT")
    enc = None
    if args.prompt is not None or vocab >= 200000:
        from harmony import HarmonyEncodingName, load_harmony_encoding
        enc = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
    if args.prompt is not None:
        if not harmony_fits(vocab, enc):
            raise cli.Failure(f"generate --prompt needs the o200k_harmony vocabulary; this checkpoint has {vocab} "
                              f"ids. Use --tokens.")
        prompt = enc.encode(args.prompt, allowed_special=set())
        if not prompt:
            raise cli.Failure("--prompt: the text has no tokens")
    else:
        try:
            prompt = check_tokens(args.tokens, vocab, what="--tokens").tolist()
        except ValueError as e:
            raise cli.Failure(str(e)) from None
    sampling = Sampling(args.temperature, args.top_p, args.seed)
    stream = lambda b, t: print(t, end=" ", flush=True)  # noqa: E731
    (row,) = engine.check([prompt], args.max_new_tokens)  # a RequestError before anything is printed
    print(f"prompt {len(row)} tokens: {row}\nnew:", end=" ")
    try:
        r = engine.generate([row], args.max_new_tokens, sampling, stop_tokens=(), on_token=stream)
    finally:
        print()  # end the line of streamed tokens, also before an error's line on stderr
    if enc is not None and harmony_fits(vocab, enc):
        print("text:", enc.decode(r.tokens[0]))
    print(f"prefill {r.prefill_tokens} tokens {rate(r.prefill_tokens, r.prefill_s)}, "
          f"decode {r.decode_tokens} tokens {rate(r.decode_tokens, r.decode_s)}")


def cmd_chat(args, engine, vocab):
    from harmony import (Conversation, HarmonyEncodingName, Message, ReasoningEffort, Role, StreamableParser,
                         SystemContent, load_harmony_encoding)
    enc = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
    if not harmony_fits(vocab, enc):
        raise cli.Failure(f"chat refused: this checkpoint's vocabulary has {vocab} ids, but harmony's chat format "
                          f"needs o200k_harmony's ids (e.g. <|start|> = 200006, <|return|> = 200002). Mapping them "
                          f"into {vocab} ids would make up a different model, so the engine does not. Try "
                          f"`python -m optimized generate --tokens 1,2,3` on this checkpoint, or chat with a real one.")
    system = SystemContent.new().with_reasoning_effort(ReasoningEffort(args.reasoning_effort.capitalize()))
    if args.system:
        system = system.with_model_identity(args.system)
    messages = [Message.from_role_and_content(Role.SYSTEM, system)]
    sampling = Sampling(args.temperature, args.top_p, args.seed)
    turns = [args.message] if args.message is not None else (line.rstrip("\n") for line in sys.stdin)
    for text in turns:
        if not text.strip():
            continue
        messages.append(Message.from_role_and_content(Role.USER, text))
        prompt = enc.render_conversation_for_completion(Conversation.from_messages(messages), Role.ASSISTANT)
        printer = ChannelPrinter(enc, StreamableParser(enc, role=Role.ASSISTANT))
        stream = lambda b, tok: printer.feed(tok)  # noqa: E731
        try:
            r = engine.generate([prompt], args.max_new_tokens, sampling,
                                stop_tokens=enc.stop_tokens_for_assistant_actions(), on_token=stream)
        except RequestError as e:
            print(f"refused: {e}")
            messages.pop()
            continue
        printer.finish()
        print(f"\n({rate(r.prefill_tokens, r.prefill_s)} prefill, {rate(r.decode_tokens, r.decode_s)} decode)")
        try:
            messages += enc.parse_messages_from_completion_tokens(r.tokens[0], Role.ASSISTANT)
        except Exception:  # an unfinished or malformed reply stays out of the history
            pass


def main(argv=None):
    args = parse_args(argv)
    with cli.reported(f"python -m optimized {args.command}", args.debug):
        run(args)


def run(args):
    path = args.checkpoint
    if path is None:
        path = TINY
        print(f"no --checkpoint: using the bundled tiny checkpoint {TINY} (random weights, vocabulary 512; "
              f"its output is meaningless)", file=sys.stderr)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise cli.Failure("--device cuda: no CUDA device is available")
    engine = Engine.load(path, args.device, DTYPES[args.dtype], args.backend, args.activations, context=args.context)
    vocab = engine.config.vocab_size
    if args.command == "serve":
        from optimized.serve import serve
        return serve(args, engine, path)
    (cmd_chat if args.command == "chat" else cmd_generate)(args, engine, vocab)


if __name__ == "__main__":
    main()
