"""`python -m golden`: (re)generate the golden data from reference/.

  python -m golden                         regenerate golden/data (committed; byte-identical on one machine)
  python -m golden --only tiny             regenerate one checkpoint's case (and keep the rest)
  python -m golden --out DIR               write a fresh copy elsewhere (e.g. to diff against the committed one)
  python -m golden --checkpoint PATH --out DIR [--chat TEXT ...] [--text TEXT ...] [--tokens 1,2,3 ...]
                   [--steps 4]             golden cases from your own checkpoint (gpt-oss-20b/120b original/ or
                                           HF folder, or a fine-tune), with a progress bar on stderr; then
                                           `pytest conformance/ --impl NAME --golden DIR`
  Prompts: --chat TEXT is a user message in a harmony prompt as gpt-oss is served (the default system message,
  the message, `<|start|>assistant`); --text TEXT is plain o200k_harmony tokens; --tokens gives the ids. Without
  any: --chat "What is 2+2?" and --text "The quick brown fox jumps over the lazy dog."
"""
import argparse
import sys
from pathlib import Path

from golden.format import DATA_DIR
from reference.checkpoint import Checkpoint
from reference.config import ConfigError
from reference.tensorfile import CheckpointError
from golden.generate import CHECKPOINTS, generate, generate_from_checkpoint

DEFAULT_CHAT, DEFAULT_TEXT = ["What is 2+2?"], ["The quick brown fox jumps over the lazy dog."]


def real_prompts(chats: list[str], texts: list[str]) -> list[list[int]]:
    """Token ids of harmony chat prompts (the default system message, one user message, the generation prompt)
    and of plain texts, in o200k_harmony."""
    from harmony import Conversation, Message, Role, SystemContent, load_harmony_encoding
    enc = load_harmony_encoding("HarmonyGptOss")
    out = []
    for text in chats:
        conv = Conversation.from_messages([Message.from_role_and_content(Role.SYSTEM, SystemContent.new()),
                                           Message.from_role_and_content(Role.USER, text)])
        out.append(enc.render_conversation_for_completion(conv, Role.ASSISTANT))
    return out + [enc.encode(text) for text in texts]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m golden", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help=f"output folder (default {DATA_DIR})")
    ap.add_argument("--only", action="append", choices=sorted(CHECKPOINTS), help="regenerate only these cases")
    ap.add_argument("--checkpoint", type=Path, help="generate cases from this checkpoint folder instead")
    ap.add_argument("--tokens", action="append", help="a comma-separated prompt (repeatable; with --checkpoint)")
    ap.add_argument("--chat", action="append", help="a user message, rendered as a harmony prompt (repeatable)")
    ap.add_argument("--text", action="append", help="a plain text prompt (repeatable)")
    ap.add_argument("--steps", type=int, default=4, help="greedy steps per prompt (with --checkpoint)")
    args = ap.parse_args(argv)
    if args.checkpoint:
        if args.out is None:
            sys.exit("--checkpoint needs --out DIR (golden/data holds the synthetic golden data)")
        if args.out.exists() and any(args.out.iterdir()):
            sys.exit(f"--out {args.out} is not empty")
        try:
            prompts = [[int(t) for t in p.split(",") if t.strip()] for p in args.tokens or []]
        except ValueError:
            sys.exit("--tokens must be comma-separated integers")
        chats, texts = args.chat or [], args.text or []
        if not (chats or texts or prompts):
            chats, texts = DEFAULT_CHAT, DEFAULT_TEXT
        if chats or texts:
            prompts += real_prompts(chats, texts)
        if any(not p for p in prompts):
            sys.exit("an empty prompt (--tokens, --chat or --text gave no tokens)")
        try:
            vocab = Checkpoint(args.checkpoint).config.vocab_size
        except (CheckpointError, ConfigError) as e:
            sys.exit(f"{type(e).__name__}: {e}")
        top = max(max(p) for p in prompts)
        if top >= vocab:
            sys.exit(f"prompt token id {top} is beyond this checkpoint's vocabulary ({vocab} ids): --chat and --text "
                     f"(and the defaults) are o200k_harmony tokens; give ids it has with --tokens")
        m = generate_from_checkpoint(args.checkpoint, args.out, prompts, args.steps)
    else:
        m = generate(args.out or DATA_DIR, only=args.only)
    print(f"wrote {len(m['files'])} golden files to {args.out or DATA_DIR} (manifest format {m['format_version']})")


if __name__ == "__main__":
    main()
