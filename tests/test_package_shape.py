"""The package's shape, as ``docs/architecture.md`` states it: modules stay under 400 lines,
at most two functions are over 100 lines, and the stages import only downwards (the layers
contract of ``pyproject.toml``, also checked by ``run_tests.sh``)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bratseg"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 100
LONG_FUNCTIONS_ALLOWED = 2


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "pretrained" not in p.parts)


def test_modules_stay_under_400_lines():
    sizes = {p.relative_to(PACKAGE.parent): len(p.read_text().splitlines()) for p in _modules()}
    assert len(sizes) > 50, "the package was not found"
    assert {p: n for p, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def test_at_most_two_functions_over_100_lines():
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.name} ({lines} lines)")
    assert len(long) <= LONG_FUNCTIONS_ALLOWED, long


def test_the_stages_import_only_downwards():
    exe = Path(sys.executable).with_name("lint-imports")
    command = str(exe) if exe.exists() else shutil.which("lint-imports")
    if command is None:
        pytest.skip("import-linter is not installed (pip install -r requirements.txt)")
    done = subprocess.run([command, "--no-cache"], cwd=PACKAGE.parent, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "1 kept, 0 broken" in done.stdout
