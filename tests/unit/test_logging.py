"""Every log line is structured: stdlib loggers (background threads, kafka-python) render like structlog's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import logging, threading, structlog
from services.kit.telemetry import setup_logging
setup_logging("stepaudio-test")
t = threading.Thread(target=lambda: logging.getLogger("services.convlog.producer").warning("send failed (%s)", "x"))
t.start(); t.join()
logging.getLogger("kafka.conn").error("broken", exc_info=ValueError("boom"))
structlog.get_logger("stepaudio.gateway").info("turn", turn_id="t1")
"""


def test_stdlib_and_structlog_lines_are_json_with_level_and_time() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT)})
    lines = [json.loads(line) for line in out.stderr.splitlines() if line.strip()]
    assert [line["event"] for line in lines] == ["send failed (x)", "broken", "turn"]
    for line in lines:
        assert line["service"] == "stepaudio-test" and line["level"] and line["timestamp"].endswith("Z")
    assert lines[0]["logger"] == "services.convlog.producer" and lines[0]["level"] == "warning"
    assert "ValueError: boom" in lines[1]["exception"]
    assert lines[2]["turn_id"] == "t1"
