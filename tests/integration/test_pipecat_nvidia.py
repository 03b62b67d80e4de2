"""Pipecat 1.14's NVIDIA Riva services, unmodified, in a real Pipecat pipeline pointed at the Riva-compatible
server (services/riva) on the stack's stages: NvidiaTTSService speaks through SynthesizeOnline,
NvidiaSTTService (Pipecat's default Riva STT) streams one long StreamingRecognize and gets a final at each pause,
and NvidiaSegmentedSTTService transcribes each VAD segment through Recognize.

Pipecat runs as a client process in its own environment (`make pipecat`, which `make test` builds; see
pipecat_riva.py for why it never shares the project's venv).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from speech_match import says

ROOT = Path(__file__).parents[2]
DATA = ROOT / "tests" / "data"
QUESTION = (DATA / "question.txt").read_text().strip()
PIPECAT_PY = ROOT / ".cache" / "pipecat" / "bin" / "python"

pytestmark = pytest.mark.integration


def pipecat(mode: str, addr: str, arg: str) -> dict:
    if not PIPECAT_PY.exists():
        pytest.fail("the Pipecat environment is missing: run `make pipecat` (make test builds it)")
    r = subprocess.run([str(PIPECAT_PY), str(Path(__file__).with_name("pipecat_riva.py")), mode, addr, arg],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    out: dict = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def test_pipecat_nvidia_tts_speaks_through_the_platform(riva_addr: str) -> None:
    got = pipecat("tts", riva_addr, "Hello from the platform. This is a second sentence.")
    assert not got["errors"], got
    assert got["audio_s"] > 1.5, got


def test_pipecat_nvidia_streaming_stt_gets_a_final_at_the_pause(riva_addr: str) -> None:
    got = pipecat("stt-stream", riva_addr, str(DATA / "question.wav"))
    assert not got["errors"], got
    assert len(got["texts"]) == 1 and says(got["texts"][0], QUESTION), got


def test_pipecat_nvidia_segmented_stt_transcribes_through_the_platform(riva_addr: str) -> None:
    got = pipecat("stt-segmented", riva_addr, str(DATA / "question.wav"))
    assert not got["errors"], got
    assert len(got["texts"]) == 1 and says(got["texts"][0], QUESTION), got
