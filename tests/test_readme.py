"""README.rst's quick-start example runs as written, and resumes from the store."""

from __future__ import annotations

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _first_python_block() -> str:
    with open(os.path.join(ROOT, "README.rst"), encoding="utf-8") as readme:
        text = readme.read()
    block = re.search(r"\.\. code-block:: python\n\n((?:    .*\n|\n)+)", text)
    assert block is not None, "README.rst has no python code block"
    return "\n".join(line[4:] for line in block.group(1).splitlines())


def test_the_quick_start_prints_its_result_and_a_rerun_reads_it_back(tmp_path):
    """The first example prints the invocation's value; run again in the same
    directory it finds the stored outcome in ./resonate.db."""
    script = tmp_path / "quickstart.py"
    script.write_text(_first_python_block())
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("RESONATE_URL", None)
    runs = [
        subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60, check=True)
        for _ in range(2)
    ]
    expected = "[{'order': 42, 'charged': 19.99}, 'shipped']\n"
    assert [run.stdout for run in runs] == [expected, expected]
    assert (tmp_path / "resonate.db").exists()
