"""Shared test settings. Hypothesis: no per-example deadline (CI machines are slow and shared, and a
deadline is a timed assertion, which this project keeps out of tests); a derandomized profile for CI."""
import os

from hypothesis import HealthCheck, settings

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
# CI (which sets CI, as .ci/run and most CI systems do) runs the same examples every time, so a red run can be
# reproduced; a developer's run explores new ones. HYPOTHESIS_PROFILE overrides both.
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "default"))

# The Triton interpreter must be on before anything imports triton (it reads TRITON_INTERPRET then): kernel_env.py
# switches it on where there is no CUDA, but a test module that imports transformers (which imports triton) may be
# collected first. So the same decision here (optimized/interpreter.py), before any test module is imported.
from optimized.interpreter import interpret_on_cpu  # noqa: E402

interpret_on_cpu()

pytest_plugins = ["harmony_helpers"]  # the harmony fixtures (oracle: openai-harmony; ours) of test_harmony_*.py
