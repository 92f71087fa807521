"""What a non-editable install (as in Dockerfile.example) ships."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from .support import ROOT


def build_wheel(project: Path, out: Path) -> zipfile.ZipFile:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(project)],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("*.whl")
    return zipfile.ZipFile(wheel)


def test_runtime_wheel_is_typed_and_complete(tmp_path: Path) -> None:
    names = set(build_wheel(ROOT, tmp_path).namelist())
    assert "msp_runtime/py.typed" in names
    for module in ("runtime", "contract", "env", "diagnostics", "postgresql", "redis", "bigquery", "testing"):
        assert f"msp_runtime/{module}.py" in names


def test_example_wheel_ships_its_migrations(tmp_path: Path) -> None:
    names = set(build_wheel(ROOT / "examples", tmp_path).namelist())
    assert "msp_example/__main__.py" in names
    assert "msp_example/migrations/0001_events.sql" in names
