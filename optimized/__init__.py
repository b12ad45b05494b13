"""optimized: the PyTorch gpt-oss engine (single device, packed MXFP4 experts, KV cache with rings for the
sliding-window layers, ragged batches, sampling, CUDA graphs, a command line). Start at optimized/README.md;
`Engine.load(path, device, dtype)` in generate.py is the entry point, `python -m optimized` the command line."""
