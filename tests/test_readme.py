"""The README's Python API example runs as written (on a tiny configuration)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_api_example_runs(tmp_path, monkeypatch):
    text = README.read_text()
    block = re.search(r"## Python API\s+```python\n(.*?)```", text, re.S)
    assert block, "the README has a Python API example"
    code = block.group(1)
    # the example trains the demo preset; keep its structure and shrink its sizes for the test
    code = code.replace('preset="demo"', 'preset="smoke"').replace('"runs/api"', repr(str(tmp_path / "api")))
    code = code.replace(
        '"loop.seeds=[0,1]"',
        '"loop.seeds=[0]", "strategy_params.mgral.iterations=3", '
        '"strategy_params.mgral.table_size=2", "strategy_params.mgral.base_iterations=4"',
    )
    assert "base_iterations=4" in code
    code = code.replace('"data/shapes/annotations.json"', repr(str(tmp_path / "shapes" / "annotations.json")))
    from mgral.data.synthetic import make_dataset, spec_for

    make_dataset("shapes", 200, 0, tmp_path / "shapes", spec_for("easy", image_size=64))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    assert namespace["rows"] and {"strategy", "seed", "cycle", "map"} <= set(namespace["rows"][0])
