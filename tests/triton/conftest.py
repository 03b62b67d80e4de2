"""A real tritonserver (from the nvidia-pytriton wheel) serving models/triton/embedded_llm, once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.llm.tritonserver import TritonHandle, start_triton


@pytest.fixture(scope="session")
def triton() -> Iterator[TritonHandle]:
    try:
        handle = start_triton(models=["embedded_llm"], ready_timeout=240)
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"tritonserver did not start: {e}")
    with handle:
        yield handle
