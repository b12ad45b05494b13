"""`--impl http:URL`: an OpenAI-compatible completions endpoint (vLLM, SGLang, `python -m optimized serve`...),
judged by its prompt log-probabilities, through the official `openai` client.

What it asks: one `/v1/completions` request per sequence, the prompt as token ids, `echo: true` and `logprobs: 20`
(the API's largest), `max_tokens: 1` at temperature 0, and vLLM's `return_tokens_as_token_ids: true`, so the top
log-probabilities come back keyed "token_id:N" (texts collide: every byte that is not UTF-8 reads U+FFFD). The
echoed prompt gives the distribution after each prefix (rows 0 .. T-2), the one generated token's logprobs the
last row. A server that names tokens by text cannot be told apart from a wrong one and is refused by name.
Capability: `top_logprobs(tokens) -> (ids [T, 20], logprobs [T, 20])`; the kit's logits/* and greedy/* checks then
compare log-probabilities (SPEC.md section 2, "Ports that give top-k log-probabilities"), and every check that
needs logits, a KV cache or stages is not_supported.

A server serves one model: certify it on golden data made from the checkpoint it serves (`python -m golden
--checkpoint PATH --out DIR`, then `--golden DIR`); the model is the first one `/v1/models` lists, or the one
named after a '#': `--impl "http:http://127.0.0.1:8000/v1#gpt-oss-20b"`. Every request is bounded by a timeout
(GPT_OSS_KIT_HTTP_TIMEOUT seconds, default 120) and never retried: a hung server fails its check, not the run.
"""
import os

import numpy as np

TOP = 20  # the OpenAI API's largest top_logprobs
TIMEOUT = float(os.environ.get("GPT_OSS_KIT_HTTP_TIMEOUT", 120))


class HttpError(RuntimeError):
    pass


def token_id(key: str) -> int:
    if not key.startswith("token_id:"):
        raise HttpError(f"the server names tokens by text ({key!r}), not as token_id:N: it must support vLLM's "
                        f"return_tokens_as_token_ids, or the kit cannot tell which tokens it means")
    return int(key[len("token_id:"):])


class HttpPort:
    device = "server"

    def __init__(self, client, model: str, url: str):
        self.client, self.model = client, model
        self.name = f"OpenAI-compatible server at {url} (model {model})"  # its dtype: --dtype (else bfloat16)

    def top_logprobs(self, tokens):
        import openai
        tokens = [int(t) for t in tokens]
        try:
            r = self.client.completions.create(model=self.model, prompt=tokens, max_tokens=1, temperature=0,
                                               echo=True, logprobs=TOP, extra_body={"return_tokens_as_token_ids": True})
        except openai.APIError as e:  # the server's own words, in one line
            raise HttpError(f"POST /completions ({len(tokens)} prompt tokens): {type(e).__name__}: {e}") from None
        lp = r.choices[0].logprobs
        rows = list(lp.top_logprobs or [])
        if len(rows) != len(tokens) + 1:
            raise HttpError(f"the server echoed {len(rows)} logprob rows for {len(tokens)} prompt tokens and 1 "
                            f"generated (it must support echo with logprobs)")
        rows = rows[1:]  # row 0 (the first prompt token's) has no distribution; row i+1 is the one after tokens[:i+1]
        T = len(tokens)
        ids, lps = np.full((T, TOP), -1, np.int64), np.full((T, TOP), -np.inf)
        for t, row in enumerate(rows):
            if not row:
                raise HttpError(f"no top logprobs at position {t}")
            best = sorted(row.items(), key=lambda kv: -kv[1])[:TOP]
            ids[t, : len(best)] = [token_id(k) for k, _ in best]
            lps[t, : len(best)] = [v for _, v in best]
        return ids, lps


class HttpFactory:
    """--impl http:URL[#MODEL]: one client for every golden checkpoint (the server serves one model)."""

    def __init__(self, spec: str):
        from conformance.plugin import ImplError
        try:
            import openai
        except ImportError:
            raise ImplError(f"--impl http:{spec}: needs the openai client: pip install openai") from None
        url, _, model = spec.partition("#")
        self.url = url
        self.client = openai.OpenAI(base_url=url, api_key=os.environ.get("OPENAI_API_KEY", "none"), timeout=TIMEOUT,
                                    max_retries=0)
        try:
            listed = [m.id for m in self.client.models.list().data]
        except Exception as e:  # noqa: BLE001 - any failure to reach it, in one line
            raise ImplError(f"--impl http:{spec}: GET {url}/models failed: {type(e).__name__}: {e}") from None
        if model and model not in listed:
            raise ImplError(f"--impl http:{spec}: the server lists {listed}, not {model!r}")
        if not listed:
            raise ImplError(f"--impl http:{spec}: the server lists no model")
        self.model = model or listed[0]

    def __call__(self, checkpoint_dir):
        return HttpPort(self.client, self.model, self.url)
