"""`python -m optimized serve`: the engine behind an OpenAI-compatible HTTP API (FastAPI on uvicorn, SSE streams).

Files: app.py (the app, shared checks, the scheduler-to-request bridge), scheduler.py (the batching loop's thread),
completions.py, chat_api.py, responses.py (the three POST endpoints), chat.py (API conversations -> harmony),
reply.py (harmony reply -> reasoning, content, tool calls), text.py (ids -> text, stop strings, logprobs),
schemas.py (request bodies), errors.py (OpenAI-shaped errors, the body-size guard). optimized/README.md documents
the endpoints, the options and what is not supported.
Needs the `serve` extra: `pip install -e '.[serve]'` (fastapi, uvicorn).
"""
from pathlib import Path


def add_arguments(p):
    from reference import cli
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=cli.integer(0, 65535), default=8000, help="0: any free port (printed)")
    p.add_argument("--model-name", default=None, help="the model id clients send (default: the checkpoint's name)")
    p.add_argument("--max-batch", type=cli.integer(1), default=8, help="sequences decoded together (cache rows)")
    p.add_argument("--max-pending", type=cli.integer(1), default=64,
                   help="requests decoding or waiting; more get 429")
    p.add_argument("--max-tokens", type=cli.integer(1), default=4096, help="the most new tokens a request may ask")
    p.add_argument("--max-body-bytes", type=cli.integer(1), default=4 * 1024 * 1024)
    p.add_argument("--threads", type=cli.integer(1), default=None, help="torch CPU threads (default: torch's)")


def model_name(checkpoint) -> str:
    path = Path(checkpoint)
    return path.parent.name if path.name == "original" else path.name


def serve(args, engine, checkpoint):
    """Run until interrupted."""
    import socket

    import torch

    from reference import cli
    try:
        import uvicorn

        from optimized.serve.app import Options, create_app
    except ImportError as e:
        raise cli.Failure(f"serve needs the serve extra (fastapi, uvicorn): pip install -e '.[serve]' ({e})") from None

    if args.threads:
        torch.set_num_threads(args.threads)
    options = Options(model_name=args.model_name or model_name(checkpoint), max_batch=args.max_batch,
                      max_pending=args.max_pending, max_tokens=args.max_tokens, max_body_bytes=args.max_body_bytes)
    app = create_app(engine, options)
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)  # connections queue from now on, so the line below can be acted on at once
    host, port = sock.getsockname()[:2]
    print(f"serving {options.model_name!r} at http://{host}:{port}/v1 (max batch {options.max_batch}, context "
          f"{engine.context})", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    server.run(sockets=[sock])
