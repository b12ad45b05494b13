"""llama.cpp's own converter (convert_hf_to_gguf.py), run on an HF-layout folder, as a subprocess of the adapter:

  python -m conformance.impls.llamacpp_convert LLAMA_CPP_DIR HF_DIR OUT.gguf OUTTYPE [--ids-only-vocab] [--vocab-only]

Everything is llama.cpp's code (its gpt-oss tensor mapping, MXFP4 repacking, hyperparameters), run as its
`__main__` with its own arguments, except one thing with --ids-only-vocab: the golden checkpoints have
vocabularies of a few hundred ids and no tokenizer files, and the converter's `set_vocab` needs the real
tokenizer (it hashes o200k's pre-tokenizer output to recognize it). The kit feeds token ids, so a GGUF whose
vocabulary is ids only is the same model: the 256 byte tokens of GPT-2's byte-level alphabet, then one
control token per remaining id. A folder with a tokenizer.json is converted with the real vocabulary as is.
"""
import runpy
import sys
from pathlib import Path


def ids_only_vocab(self):
    """GptOssModel.set_vocab for a checkpoint without tokenizer files (see the module docstring)."""
    import gguf
    from transformers.convert_slow_tokenizer import bytes_to_unicode  # GPT-2's byte-level alphabet
    n = self.hparams["vocab_size"]
    alphabet = bytes_to_unicode()
    tokens = [alphabet[b] for b in range(min(n, 256))] + [f"<|id_{i}|>" for i in range(256, n)]
    types = [gguf.TokenType.NORMAL] * min(n, 256) + [gguf.TokenType.CONTROL] * max(0, n - 256)
    w = self.gguf_writer
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-4o")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges([f"{tokens[0]} {tokens[1]}"])  # llama.cpp's BPE loader needs a merges key (no merge is used)
    w.add_eos_token_id(n - 1)


def main(argv):
    src, hf_dir, out, outtype, *flags = argv
    src = Path(src)
    sys.path.insert(0, str(src / "gguf-py"))
    sys.path.insert(0, str(src))
    if "--ids-only-vocab" in flags:
        import conversion.gpt_oss
        conversion.gpt_oss.GptOssModel.set_vocab = ids_only_vocab
    sys.argv = ["convert_hf_to_gguf.py", hf_dir, "--outfile", out, "--outtype", outtype]
    if "--vocab-only" in flags:
        sys.argv.append("--vocab-only")
    runpy.run_path(str(src / "convert_hf_to_gguf.py"), run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
