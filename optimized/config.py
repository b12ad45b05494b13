"""The model configuration: the same frozen dataclass as the reference (config.json keys), shared, not copied.

Not here: engine choices (device, dtype, context, batch); those are arguments of the engine and of
`memory.plan_memory`.
"""
from reference.config import GPT_OSS_20B, GPT_OSS_120B, PRESETS, Config, ConfigError

__all__ = ["Config", "ConfigError", "GPT_OSS_20B", "GPT_OSS_120B", "PRESETS"]
