"""The TensorRT-LLM `ensemble` / `tensorrt_llm_bls` tensor contract, as spoken by tritonclient.

Both `embedded_llm` (python backend, CPU) and `step_audio_chat` (TensorRT-LLM, GPU) take these inputs; models with
max_batch_size > 0 need a leading batch dimension of 1, which `build_inputs` adds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from tritonclient.grpc import InferInput, InferRequestedOutput

# Outputs read by the LLM service. finish_reason is an embedded_llm extension (TensorRT-LLM does not send it).
TEXT_OUTPUT = "text_output"
PERF_OUTPUTS = ("num_input_tokens", "num_output_tokens", "arrival_time_ns", "first_token_time_ns", "finish_reason")


@dataclass
class GenerationParams:
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop_words: Sequence[str] = field(default_factory=tuple)
    bad_words: Sequence[str] = field(default_factory=tuple)
    end_id: int | None = None
    pad_id: int | None = None
    stream: bool = True
    perf_metrics: bool = True


def _tensor(name: str, value: np.ndarray, dtype: str, batched: bool) -> InferInput:
    arr = value[np.newaxis, ...] if batched else value
    t = InferInput(name, list(arr.shape), dtype)
    t.set_data_from_numpy(arr)
    return t


def build_inputs(prompt: str, p: GenerationParams, batched: bool = True) -> list[InferInput]:
    """InferInputs for one request. `batched`: the model has max_batch_size > 0 (all of ours do)."""
    s = lambda *vals: np.array([v.encode("utf-8") for v in vals], dtype=np.object_)  # noqa: E731
    inputs = [
        _tensor("text_input", s(prompt), "BYTES", batched),
        _tensor("max_tokens", np.array([p.max_tokens], dtype=np.int32), "INT32", batched),
        _tensor("stream", np.array([p.stream], dtype=bool), "BOOL", batched),
        _tensor("temperature", np.array([p.temperature], dtype=np.float32), "FP32", batched),
        _tensor("top_p", np.array([p.top_p], dtype=np.float32), "FP32", batched),
        _tensor("top_k", np.array([p.top_k], dtype=np.int32), "INT32", batched),
        _tensor("repetition_penalty", np.array([p.repetition_penalty], dtype=np.float32), "FP32", batched),
    ]
    if p.seed is not None:
        inputs.append(_tensor("random_seed", np.array([p.seed], dtype=np.uint64), "UINT64", batched))
    if p.stop_words:
        inputs.append(_tensor("stop_words", s(*p.stop_words), "BYTES", batched))
    if p.bad_words:
        inputs.append(_tensor("bad_words", s(*p.bad_words), "BYTES", batched))
    if p.end_id is not None:
        inputs.append(_tensor("end_id", np.array([p.end_id], dtype=np.int32), "INT32", batched))
    if p.pad_id is not None:
        inputs.append(_tensor("pad_id", np.array([p.pad_id], dtype=np.int32), "INT32", batched))
    if p.perf_metrics:
        for flag in ("return_perf_metrics", "return_num_input_tokens", "return_num_output_tokens"):
            inputs.append(_tensor(flag, np.array([True], dtype=bool), "BOOL", batched))
    return inputs


def stop_inputs(batched: bool = True) -> list[InferInput]:
    """InferInputs of a request that stops the running request with the same request id (TensorRT-LLM's ``stop``
    input; the required inputs carry placeholders)."""
    return [
        _tensor("text_input", np.array([b""], dtype=np.object_), "BYTES", batched),
        _tensor("max_tokens", np.array([1], dtype=np.int32), "INT32", batched),
        _tensor("stop", np.array([True], dtype=bool), "BOOL", batched),
    ]


def requested_outputs(perf: bool = True) -> list[InferRequestedOutput]:
    names = [TEXT_OUTPUT, *(PERF_OUTPUTS if perf else ())]
    return [InferRequestedOutput(n) for n in names]


def text_of(result: object) -> str:
    """Concatenated text_output of one InferResult ('' when absent)."""
    arr = result.as_numpy(TEXT_OUTPUT)  # type: ignore[attr-defined]
    if arr is None:
        return ""
    return "".join(v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v) for v in arr.reshape(-1))


def scalar_of(result: object, name: str) -> int | str | None:
    try:
        arr = result.as_numpy(name)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001  (output not in this response)
        return None
    if arr is None or arr.size == 0:
        return None
    v = arr.reshape(-1)[0]
    return v.decode() if isinstance(v, bytes) else int(v)
