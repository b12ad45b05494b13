"""Shared test settings. Hypothesis: no per-example deadline (CI machines are slow and shared, and a
deadline is a timed assertion, which this project keeps out of tests); a derandomized profile for CI."""
import os

from hypothesis import HealthCheck, settings

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
