"""Every ```python block of harmony/README.md runs, in order, in one namespace: the documentation cannot rot."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "harmony" / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)
    assert len(blocks) >= 5
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{README}:block{i}", "exec"), namespace)
