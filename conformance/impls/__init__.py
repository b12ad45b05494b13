"""Built-in implementations for `--impl reference` and `--impl transformers`."""
