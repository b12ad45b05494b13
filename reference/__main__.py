"""`python -m reference`: run the reference on a checkpoint (default: the bundled tiny one) and print
greedy continuations and the top logits, so a porter can compare by eye before running the kit.
Errors (arguments, the checkpoint, the tokens) are one line on stderr and exit status 2; --debug shows the traceback."""
import time
from pathlib import Path

import numpy as np

from reference import cli
from reference.model import Model
from reference.tokens import check_tokens

BUNDLED = Path(__file__).resolve().parent.parent / "golden" / "data" / "checkpoints" / "tiny"
PROG = "python -m reference"


def main(argv=None):
    ap = cli.ArgumentParser(prog=PROG, description=__doc__)
    ap.add_argument("--checkpoint", default=None, help="checkpoint folder (original or HF layout)")
    ap.add_argument("--tokens", type=cli.token_ids, default="1,2,3,4,5,6,7,8", help="comma-separated prompt token ids")
    ap.add_argument("--steps", type=cli.integer(0), default=8, help="greedy tokens to generate")
    cli.add_debug(ap)
    args = ap.parse_args(argv)
    with cli.reported(PROG, args.debug):
        run(args)


def run(args):
    path = Path(args.checkpoint) if args.checkpoint else BUNDLED
    if args.checkpoint is None:
        print(f"no --checkpoint given: using the bundled tiny checkpoint {path} (random weights)")
    model = Model(path)
    c = model.config
    print(f"{path}: {model.ckpt.layout} layout, {c.num_hidden_layers} layers, {c.num_experts} experts, "
          f"vocab {c.vocab_size}, hidden {c.hidden_size}")
    try:
        prompt = check_tokens(args.tokens, c.vocab_size, what="--tokens").tolist()
    except ValueError as e:
        raise cli.Failure(str(e)) from None
    cache = model.new_cache()
    t0 = time.perf_counter()
    logits = model.forward(prompt, cache)
    out = []
    for _ in range(args.steps):
        nxt = int(np.argmax(logits[-1]))
        out.append(nxt)
        logits = model.forward([nxt], cache)
    dt = time.perf_counter() - t0
    top = np.argsort(-model.logits(prompt)[-1])[:5]
    print(f"prompt {prompt}\ngreedy {out}\ntop-5 after the prompt {top.tolist()}\n"
          f"{dt:.2f} s for {len(prompt)} prompt + {args.steps} decoded tokens")


if __name__ == "__main__":
    main()
