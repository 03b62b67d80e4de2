"""Shared fixtures: the whole platform as separate processes (Triton + every service) and an OTLP receiver."""

from __future__ import annotations

from collections.abc import Iterator

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
