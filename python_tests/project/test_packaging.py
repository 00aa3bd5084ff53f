"""`pip install .` ships the CUDA sources as package data and the `anyres-fast` console script."""
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_contains_sources_and_console_script(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path)], check=True, cwd=tmp_path)
    wheel = next(tmp_path.glob("anyres_fast-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for src in (p.relative_to(ROOT) for p in (ROOT / "csrc").rglob("*") if p.is_file()):
        assert f"anyres_fast/{src}" in names, f"{src} missing from the wheel"
    assert "anyres_fast/ops/_extension.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "anyres-fast = anyres_fast.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_doctor_runs():
    out = subprocess.run([sys.executable, "-m", "anyres_fast", "doctor"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "torch" in out.stdout and "extension" in out.stdout and "build log" in out.stdout
