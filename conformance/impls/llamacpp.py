"""`--impl llama.cpp`: llama.cpp through its C API (llama-cpp-python's ctypes bindings), on GGUFs written by
llama.cpp's own converter (convert_hf_to_gguf.py) from the golden checkpoints.

What runs: each golden checkpoint, in whatever layout the kit hands it, becomes an HF-layout folder
(conformance/impls/hf_layout.py), then a GGUF by llama.cpp's converter (conformance/impls/llamacpp_convert.py;
cached by content under $GPT_OSS_KIT_CACHE/llama.cpp, default ~/.cache/gpt-oss-kit), then a llama_model and a
llama_context on the CPU. Experts stay MXFP4 as released; the other weights are what OUTTYPE says (f32 or bf16;
q8_0 re-quantizes them, which changes the model: judge that with `python -m conformance.quality`).
Capabilities: logits (one llama_decode of the whole prompt), decode_logits (prefill, then one token per
llama_decode through its KV cache), batch_logits (the sequences as seq_ids of one llama_decode), intermediates
(llama.cpp's graph tensors through its eval callback: inp_embd, ffn_inp-N, l_out-N, result_norm, ffn_moe_topk-N),
and tokenize / tokenize_special / detokenize on a vocabulary-only GGUF of the real o200k_harmony tokenizer.
Precision class: llama.cpp's CPU MXFP4 matmuls take their activations as Q8_0 (ggml's vec_dot_type of MXFP4),
so the port declares activations "int8" (conformance/SPEC.md section 3) beside the GGUF's dtype.

Where llama.cpp's converter comes from (it is not in llama-cpp-python's wheel): $LLAMA_CPP_DIR (a llama.cpp
checkout), else the llama-cpp-python source distribution in $GPT_OSS_KIT_CACHE/sdist (README's install step
downloads it; it vendors llama.cpp with the converter), unpacked once. Nothing is fetched at run time.
"""
import ctypes
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from conformance.impls.hf_layout import cache_key, hf_folder

VERSION = "0.3.36"  # the llama-cpp-python this adapter is written and tested against (pyproject's [llamacpp] extra)
CACHE = Path(os.environ.get("GPT_OSS_KIT_CACHE", Path.home() / ".cache" / "gpt-oss-kit"))
SDIST_DIR = CACHE / "sdist"
OUTTYPES = {"f32": "float32", "bf16": "bfloat16", "q8_0": "bfloat16"}  # GGUF non-expert type -> declared dtype
KV_TYPES = {"f32": 0, "f16": 1, "q8_0": 8, "bf16": 30}  # ggml_type
FETCH = (f"pip download --no-deps --no-binary :all: llama-cpp-python=={VERSION} -d {SDIST_DIR}  "
         f"(its source distribution vendors llama.cpp's convert_hf_to_gguf.py), or set LLAMA_CPP_DIR to a llama.cpp "
         f"checkout")


def preflight():
    if importlib.util.find_spec("llama_cpp") is None:
        raise ImportError("the llama.cpp adapter needs llama-cpp-python: pip install -e '.[llamacpp]' (builds "
                          "llama.cpp from source: about 11 minutes on 2 cores, then cached by pip)")
    converter_dir()


def converter_dir() -> Path:
    """A folder holding llama.cpp's convert_hf_to_gguf.py, conversion/ and gguf-py/ (see the module docstring)."""
    own = os.environ.get("LLAMA_CPP_DIR")
    if own:
        if not (Path(own) / "convert_hf_to_gguf.py").is_file():
            raise FileNotFoundError(f"LLAMA_CPP_DIR={own}: no convert_hf_to_gguf.py there")
        return Path(own)
    sdists = sorted(SDIST_DIR.glob("llama_cpp_python-*.tar.gz"))
    if not sdists:
        raise FileNotFoundError(f"llama.cpp's converter not found: {FETCH}")
    sdist = sdists[-1]
    out = CACHE / sdist.name.removesuffix(".tar.gz")
    if not (out / "convert_hf_to_gguf.py").is_file():
        prefix = f"{sdist.name.removesuffix('.tar.gz')}/vendor/llama.cpp/"
        tmp = Path(tempfile.mkdtemp(dir=CACHE))
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.isfile()
                       and m.name[len(prefix):].split("/")[0] in ("convert_hf_to_gguf.py", "conversion", "gguf-py")]
            for m in members:
                m.name = m.name[len(prefix):]
            tar.extractall(tmp, members=members, filter="data")
        if not (tmp / "convert_hf_to_gguf.py").is_file():
            raise FileNotFoundError(f"{sdist}: no vendor/llama.cpp/convert_hf_to_gguf.py inside")
        try:
            tmp.rename(out)
        except OSError:  # another process made it first
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def gguf_for(checkpoint_dir, outtype: str = "bf16", vocab_only: bool = False) -> Path:
    """The GGUF llama.cpp's converter makes of a checkpoint (any layout), written once and cached by content."""
    if outtype not in OUTTYPES:
        raise ValueError(f"outtype {outtype!r}: use one of {', '.join(OUTTYPES)}")
    hf = Path(checkpoint_dir) if vocab_only else hf_folder(checkpoint_dir)  # vocab only: the weights are not read
    src = converter_dir()
    key = hashlib.sha256(f"{cache_key(hf)}:{outtype}:{src.name}:{vocab_only}".encode()).hexdigest()[:16]
    out = CACHE / "llama.cpp" / f"{key}-{'vocab' if vocab_only else outtype}.gguf"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    args = [sys.executable, "-m", "conformance.impls.llamacpp_convert", str(src), str(hf), str(tmp), outtype]
    if not (hf / "tokenizer.json").is_file():
        args.append("--ids-only-vocab")
    if vocab_only:
        args.append("--vocab-only")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).parents[2]),
                                                                    os.environ.get("PYTHONPATH")])))
    run = subprocess.run(args, capture_output=True, text=True, env=env, timeout=1800)
    if run.returncode != 0 or not tmp.is_file():
        tail = " / ".join(run.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"llama.cpp's convert_hf_to_gguf.py failed on {hf} (exit {run.returncode}): {tail}")
    tmp.rename(out)
    return out


def harmony_vocab_folder() -> Path:
    """An HF-layout folder whose tokenizer is the real o200k_harmony (golden/hf_files.py, checked against the
    kit's text vectors) and whose config says vocab_size 201088: what llama.cpp's converter reads for the vocabulary
    of a vocabulary-only GGUF (the bundled tiny checkpoint's config, no weights are read)."""
    import json
    from golden import format as gformat, hf_files
    from reference.tokenizer import N_VOCAB
    out = CACHE / "harmony-vocab"
    if not (out / "tokenizer.json").is_file():
        tiny = hf_folder(gformat.DATA_DIR / "checkpoints" / "tiny")
        CACHE.mkdir(parents=True, exist_ok=True)  # absent when the converter comes from $LLAMA_CPP_DIR
        tmp = Path(tempfile.mkdtemp(dir=CACHE))
        for f in tiny.iterdir():
            if f.is_file():
                (tmp / f.name).symlink_to(f)
        config = json.loads((tiny / "config.json").read_text()) | {"vocab_size": N_VOCAB}
        (tmp / "config.json").unlink()
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        hf_files.write(tmp)
        try:
            tmp.rename(out)
        except OSError:  # another process made it first
            shutil.rmtree(tmp, ignore_errors=True)
    return out


class Vocab:
    """llama.cpp's tokenizer on a vocabulary-only GGUF of o200k_harmony (llama_tokenize, llama_token_to_piece)."""

    def __init__(self):
        lib = _lib()
        mp = lib.llama_model_default_params()
        mp.vocab_only = True
        self.path = gguf_for(harmony_vocab_folder(), "f32", vocab_only=True)
        self.model = lib.llama_model_load_from_file(str(self.path).encode(), mp)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load the vocabulary {self.path}")
        self.lib, self.vocab = lib, lib.llama_model_get_vocab(self.model)

    def tokenize(self, text: str, special: bool) -> list[int]:
        raw = text.encode()
        n = len(raw) + 8
        while True:
            buf = (self.lib.llama_token * n)()
            got = self.lib.llama_tokenize(self.vocab, raw, len(raw), buf, n, False, special)
            if got >= 0:
                return list(buf[:got])
            n = -got  # too small: llama.cpp says how many it needs

    def detokenize(self, tokens) -> bytes:
        out = b""
        for t in tokens:
            buf = ctypes.create_string_buffer(256)
            n = self.lib.llama_token_to_piece(self.vocab, int(t), buf, 256, 0, True)
            if n < 0:
                raise RuntimeError(f"llama_token_to_piece({t}) needs {-n} bytes")
            out += buf.raw[:n]
        return out


def _vocab() -> Vocab:
    if not hasattr(_vocab, "one"):
        _vocab.one = Vocab()
    return _vocab.one


def _lib():
    import llama_cpp
    if not getattr(_lib, "ready", False):
        llama_cpp.llama_log_set(_QUIET, ctypes.c_void_p())  # llama.cpp logs every load to stderr otherwise
        llama_cpp.llama_backend_init()
        _lib.ready = True
    return llama_cpp


def _quiet(level, text, user_data):
    return None


try:
    import llama_cpp as _lc
    _QUIET = _lc.llama_log_callback(_quiet)
except ImportError:  # preflight names it
    _QUIET = None


class Graph:
    """Tensors of llama.cpp's compute graph by name, read through the eval callback during llama_decode.
    ggml's C API reads them: ggml_get_name, ggml_nbytes, ggml_backend_tensor_get; ne sits after the type and the
    buffer pointer in struct ggml_tensor (ggml.h), which every ggml version has kept."""

    def __init__(self, lib_dir: Path):
        base = ctypes.CDLL(str(next(lib_dir.glob("libggml-base.so*"))))
        base.ggml_get_name.restype, base.ggml_get_name.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
        base.ggml_nbytes.restype, base.ggml_nbytes.argtypes = ctypes.c_size_t, [ctypes.c_void_p]
        base.ggml_is_contiguous.restype, base.ggml_is_contiguous.argtypes = ctypes.c_bool, [ctypes.c_void_p]
        base.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
        self.ggml, self.want, self.got = base, (), {}

    def callback(self, t, ask, user_data):
        name = self.ggml.ggml_get_name(t).decode()
        if ask:
            return name in self.want
        if name in self.want:
            ttype = ctypes.cast(t, ctypes.POINTER(ctypes.c_int32))[0]
            dtype = {0: np.float32, 26: np.int32}.get(ttype)  # GGML_TYPE_F32, GGML_TYPE_I32
            if dtype is not None:
                words = ctypes.cast(t, ctypes.POINTER(ctypes.c_int64))
                ne, nb = [words[2 + i] for i in range(4)], [words[6 + i] for i in range(4)]  # after type, buffer
                span = self.ggml.ggml_nbytes(t)  # the bytes a view spans (topk is a strided view of argsort)
                raw = np.zeros(span + (-span) % 8, dtype=np.uint8)
                self.ggml.ggml_backend_tensor_get(t, raw.ctypes.data, 0, span)
                a = np.lib.stride_tricks.as_strided(raw.view(dtype), shape=ne[::-1], strides=nb[::-1]).copy()
                while a.ndim > 2 and a.shape[0] == 1:  # ggml's ne[0] is the fastest dimension: [T, C] is (C, T, 1, 1)
                    a = a[0]
                self.got.setdefault(name, []).append(a)
        return True


class LlamaCppImpl:
    device = "cpu"
    activations = "int8"  # Q8_0 activations into the MXFP4 expert matmuls (ggml's CPU vec_dot_type for MXFP4)

    def __init__(self, checkpoint_dir, outtype: str = "f32", kv: str | None = None, flash: str | None = None,
                 n_ctx: int = 4096):
        lib = _lib()
        self.lib, self.dtype = lib, OUTTYPES[outtype]
        kv = kv or ("f32" if outtype == "f32" else "f16")
        # flash attention on the CPU rounds Q to f16 for its dot products (1e-3 at block.0.attn: far outside float32
        # bounds, well inside bf16's), so the f32 GGUF runs without it and the bf16 one as llama.cpp chooses
        flash = flash or ("off" if outtype == "f32" else "auto")
        self.path = gguf_for(checkpoint_dir, outtype)
        mp = lib.llama_model_default_params()
        mp.n_gpu_layers = 0
        self.model = lib.llama_model_load_from_file(str(self.path).encode(), mp)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {self.path}")
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_vocab = lib.llama_vocab_n_tokens(self.vocab)
        self.graph = Graph(Path(lib.__file__).parent / "lib")
        self._cb = lib.ggml_backend_sched_eval_callback(self.graph.callback)
        cp = lib.llama_context_default_params()
        cp.n_ctx = cp.n_batch = cp.n_ubatch = n_ctx
        cp.n_seq_max = 8
        cp.kv_unified = True
        threads = int(os.environ.get("GPT_OSS_KIT_THREADS", os.cpu_count() or 1))
        cp.n_threads = cp.n_threads_batch = threads
        cp.type_k = cp.type_v = KV_TYPES[kv]
        cp.flash_attn_type = {"auto": -1, "off": 0, "on": 1}[flash]
        cp.cb_eval, cp.cb_eval_user_data = self._cb, None
        cp.no_perf = True
        self.ctx = lib.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise RuntimeError(f"llama.cpp could not make a context for {self.path}")
        self.n_layers = lib.llama_model_n_layer(self.model)
        self.name = f"llama.cpp (llama-cpp-python {lib.__version__}, CPU, GGUF {outtype}, KV {kv}, flash {flash})"

    def __del__(self):
        lib = getattr(self, "lib", None)
        if lib is not None and getattr(self, "ctx", None):
            lib.llama_free(self.ctx)
        if lib is not None and getattr(self, "model", None):
            lib.llama_model_free(self.model)

    # -- decoding -------------------------------------------------------------------------------------------
    def _decode(self, seqs: list[tuple[int, int, list[int]]]) -> list[np.ndarray]:
        """One llama_decode of (seq_id, first position, tokens) sequences; their logits rows, in order."""
        lib = self.lib
        n = sum(len(t) for _, _, t in seqs)
        batch = lib.llama_batch_init(n, 0, 1)
        try:
            i = 0
            for seq, p0, toks in seqs:
                for j, tok in enumerate(toks):
                    batch.token[i], batch.pos[i], batch.n_seq_id[i] = int(tok), p0 + j, 1
                    batch.seq_id[i][0], batch.logits[i] = seq, 1
                    i += 1
            batch.n_tokens = n
            rc = lib.llama_decode(self.ctx, batch)
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc} on {n} tokens")
            rows = [np.ctypeslib.as_array(lib.llama_get_logits_ith(self.ctx, k), shape=(self.n_vocab,)).copy()
                    for k in range(n)]
        finally:
            lib.llama_batch_free(batch)
        out, k = [], 0
        for _, _, toks in seqs:
            out.append(np.stack(rows[k:k + len(toks)]))
            k += len(toks)
        return out

    def _clear(self):
        self.lib.llama_memory_clear(self.lib.llama_get_memory(self.ctx), True)

    def logits(self, tokens):
        self._clear()
        return self._decode([(0, 0, list(tokens))])[0]

    def decode_logits(self, tokens, prefill: int):
        self._clear()
        rows = [self._decode([(0, 0, list(tokens[:prefill]))])[0]]
        for i in range(prefill, len(tokens)):
            rows.append(self._decode([(0, i, [tokens[i]])])[0])
        return np.concatenate(rows)

    def batch_logits(self, batch):
        self._clear()
        return self._decode([(s, 0, list(t)) for s, t in enumerate(batch)])

    # -- text: llama.cpp's tokenizer on the real vocabulary --------------------------------------------------
    def tokenize(self, text):
        return _vocab().tokenize(text, special=False)

    def tokenize_special(self, text):
        return _vocab().tokenize(text, special=True)

    def detokenize(self, tokens):
        return _vocab().detokenize(tokens)

    def intermediates(self, tokens):
        L = self.n_layers
        names = {"embd": "embedding", "result_norm": "norm"}
        for n in range(L):
            names |= {f"ffn_inp-{n}": f"block.{n}.attn", f"l_out-{n}": f"block.{n}.mlp",
                      f"ffn_moe_topk-{n}": f"block.{n}.mlp.expert_ids"}
        self.graph.want, self.graph.got = set(names), {}
        try:
            logits = self.logits(tokens)
        finally:
            self.graph.want = ()
        out = {"logits": logits}
        for name, stage in names.items():
            parts = self.graph.got.get(name)
            if parts:
                out[stage] = np.concatenate(parts)
        return out


def factory(checkpoint_dir):
    """f32 GGUF (non-expert weights float32, experts MXFP4), f32 KV cache, no flash attention: float32+int8."""
    return LlamaCppImpl(checkpoint_dir, "f32")


def factory_bf16(checkpoint_dir):
    """bf16 GGUF, f16 KV cache (llama.cpp's default): the bfloat16+int8 class."""
    return LlamaCppImpl(checkpoint_dir, "bf16")


def factory_q8_0(checkpoint_dir):
    """Q8_0 GGUF (the usual download): weights re-quantized, so the kit's bounds do not hold by design; measure
    it with `python -m conformance.quality --impl conformance.impls.llamacpp:factory_q8_0`."""
    return LlamaCppImpl(checkpoint_dir, "q8_0")
