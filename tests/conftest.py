"""Shared fixtures: the whole platform as separate processes (Triton + every service) and an OTLP receiver."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from otlp_receiver import OtlpReceiver

from stepaudio.stack import Stack
from stepaudio.tritonserver import TritonHandle, start_triton


@pytest.fixture(scope="session")
def triton() -> Iterator[TritonHandle]:
    """A real tritonserver (the nvidia-pytriton wheel's binary) serving models/triton/embedded_llm."""
    try:
        handle = start_triton(models=["embedded_llm"], ready_timeout=240)
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"tritonserver did not start: {e}")
    with handle:
        yield handle


@pytest.fixture(scope="session")
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, otlp: OtlpReceiver) -> Iterator[Stack]:
    run_dir = tmp_path_factory.mktemp("stack")
    s = Stack(run_dir=run_dir, otlp_endpoint=otlp.endpoint)
    try:
        s.start(timeout=300)
    except Exception as e:  # noqa: BLE001
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted((run_dir / "logs").glob("*.log")))
        pytest.fail(f"the stack did not start: {e}\n{logs}")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def riva_addr(stack: Stack) -> Iterator[str]:
    """The Riva-compatible server (services/riva) in this process, on the stack's tokenizer, VAD and TTS."""
    import asyncio
    import threading

    from services.riva.__main__ import build
    from services.riva.settings import RivaSettings

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    server = build(RivaSettings(host="127.0.0.1", port=0, tokenizer_addr=stack.addr("tokenizer"),
                                tts_addr=stack.addr("tts"), vad_addr=stack.addr("vad"), log_json=False,
                                log_level="WARNING"))
    port = asyncio.run_coroutine_threadsafe(server.start(), loop).result(60)
    yield f"127.0.0.1:{port}"
    asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)


@pytest.fixture()
def redis_url(tmp_path: Path) -> Iterator[str]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run installs it)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path),
                             "--appendonly", "yes", "--save", ""], stdout=subprocess.DEVNULL)
    import redis

    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)
