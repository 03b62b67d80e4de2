"""`make gpu-check` is prepared for a lent GPU; its CPU dry run keeps the script working in CI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_dry_run_prints_the_table() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {k.strip(): v for k, v in (line.split(" | ", 1) for line in proc.stdout.splitlines() if " | " in line)}
    sqrt = next(v for k, v in rows.items() if "sqrt ALiBi" in k)
    linear = next(v for k, v in rows.items() if "linear ALiBi" in k)
    assert "ACCEPTED" in sqrt and "REFUSED" in linear
    assert "tokens/s" in rows["Step1 tiny greedy decode"] and "real-time factor" in rows["token2wav 6 s of tokens"]
