"""Triton python backend model: a Step1 checkpoint (Step-Audio-Chat or Step-Audio-TTS-3B) on the project's own
torch implementation (models.stepaudio.step1), decoupled (streaming).

The fallback behind the same Triton contract as the TensorRT-LLM repositories: tiny checkpoints on CPU (tests, CI,
laptops), and real ones on a GPU where no engine was built. Generated into a repository by
``python -m models.trtllm.make_repo --backend torch`` (parameters documented there and in config.pbtxt).

Contract: the inputs of TensorRT-LLM's ``tensorrt_llm_bls`` model, plus ``input_ids``:

* ``text_input`` (chat-templated prompt: ``<|BOT|>``, ``<|EOT|>`` and ``<audio_X>`` mapped directly, text through
  the checkpoint's codec) or ``input_ids`` (prompt ids, BOS included: the TTS service builds them). Exactly one.
* ``max_tokens``, ``temperature``, ``top_p``, ``top_k``, ``random_seed``, ``stream``, ``stop_words``,
  ``bad_words``, ``end_id``; ``repetition_penalty`` must be 1 (Step1 has none; the TTS repetition guard is a
  model parameter).
* outputs per step: ``text_output`` (new text; audio ids as ``<audio_X>``) and ``output_ids`` (new ids); on the
  last response ``num_input_tokens``, ``num_output_tokens``, the perf times and ``finish_reason``.

Role ``tts`` (parameter ``output_vocab: audio``): logits are masked to the audio ids (65536..70655) and EOT, and
the TTS-3B repetition guard runs, as the reference samples them.

Load-time proof (models.stepaudio.probe): the logits of the probe prompt must match the reference stored in
``<checkpoint_dir>/step1_probe.npz``, else ``initialize`` raises and the model never becomes READY; the error says
by how much and why. Parameter ``alibi_bias: linear`` reproduces stock TensorRT-LLM's bias (only to test that).

Concurrency: ``slots`` requests decode at once, each in its own worker thread (torch releases the GIL in its
kernels); more wait for a slot. Cancellation is checked between tokens; every request gets exactly one FINAL
response, also on error or cancellation.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL

PERF_FLAGS = {
    "num_input_tokens": "return_num_input_tokens",
    "num_output_tokens": "return_num_output_tokens",
    "arrival_time_ns": "return_perf_metrics",
    "first_token_time_ns": "return_perf_metrics",
    "last_token_time_ns": "return_perf_metrics",
    "finish_reason": None,
}
REQUIRED_OUTPUTS = ("text_output", "output_ids")


def _param(config: dict[str, Any], key: str, default: str) -> str:
    value = config.get("parameters", {}).get(key, {}).get("string_value", "")
    return value if value not in ("", None) else default


def _tensor(request: Any, name: str) -> np.ndarray | None:
    t = pb_utils.get_input_tensor_by_name(request, name)
    if t is None:
        return None
    arr = t.as_numpy()
    return arr if arr.size else None


def _scalar(request: Any, name: str) -> Any:
    arr = _tensor(request, name)
    if arr is None:
        return None
    if arr.size != 1:
        raise ValueError(f"input {name} must hold one value per request (batch of 1), got shape {list(arr.shape)}")
    v = arr.reshape(-1)[0]
    return v.decode("utf-8", errors="replace") if isinstance(v, bytes) else v.item()


def _strings(request: Any, name: str) -> list[str]:
    arr = _tensor(request, name)
    if arr is None:
        return []
    out = [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v) for v in arr.reshape(-1)]
    return [s for s in out if s]


@dataclass
class _Job:
    ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    seed: int | None
    stream: bool
    stop: list[str]
    bad: list[list[int]]
    end_ids: set[int]
    arrival_ns: int = field(default_factory=time.time_ns)
    first_ns: int = 0
    last_ns: int = 0
    n_out: int = 0
    text: list[str] = field(default_factory=list)
    out_ids: list[int] = field(default_factory=list)
    finish_reason: str = ""


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        self.model_config = config = json.loads(args["model_config"])
        self.name = config.get("name", "step1_torch")
        self._validate_config(config)
        import torch

        from models.stepaudio import probe
        from models.stepaudio.step1 import ALIBI_BIASES, Step1ForCausalLM
        from models.stepaudio.text_codec import load_text_codec

        self.logger = pb_utils.Logger
        ckpt = Path(os.environ.get("STEPAUDIO_STEP1_CHECKPOINT_DIR_" + self.name.upper(), "")
                    or _param(config, "checkpoint_dir", ""))
        if not (ckpt / "config.json").is_file():
            raise pb_utils.TritonModelException(
                f"{self.name}: checkpoint_dir {str(ckpt)!r} holds no Step1 config.json (parameter checkpoint_dir)")
        self.output_vocab = _param(config, "output_vocab", "text")
        self.alibi_bias = _param(config, "alibi_bias", "sqrt")
        device = _param(config, "device", "auto")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.slots = int(_param(config, "slots", "4"))
        self.default_max_tokens = int(_param(config, "default_max_tokens", "256"))
        self.max_max_tokens = int(_param(config, "max_max_tokens", "4096"))
        self.repetition_guard = _param(config, "repetition_guard", "false") == "true"
        tolerance = float(_param(config, "probe_tolerance", str(probe.DEFAULT_TOLERANCE)))
        problems = []
        if self.output_vocab not in ("text", "audio"):
            problems.append(f"output_vocab {self.output_vocab!r} must be text or audio")
        if self.alibi_bias not in ALIBI_BIASES:
            problems.append(f"alibi_bias {self.alibi_bias!r} must be one of {ALIBI_BIASES}")
        if self.slots < 1:
            problems.append("slots must be >= 1")
        if problems:
            raise pb_utils.TritonModelException(f"{self.name}: " + "; ".join(problems))
        threads = int(os.environ.get("STEPAUDIO_STEP1_THREADS", "0") or _param(config, "threads", "0"))
        torch.set_num_threads(threads if threads > 0 else max(1, (os.cpu_count() or 1) // 2))
        self.torch = torch
        self.model = Step1ForCausalLM.from_pretrained(ckpt, device)
        self.model.alibi_bias = self.alibi_bias
        self.codec = load_text_codec(ckpt)
        self.vocab = self.model.config.vocab_size

        probe_file = ckpt / probe.PROBE_FILE
        if not probe_file.is_file():
            raise pb_utils.TritonModelException(
                f"{self.name}: {probe_file} is missing: write the reference probe with "
                f"`python -m models.stepaudio.probe write {ckpt}` (the model will not serve unproven)")
        result = probe.check(self._logits, probe.Probe.load(probe_file), tolerance)
        message = result.message(f"{self.name} (torch, alibi_bias={self.alibi_bias}, {device})")
        if not result.ok:
            raise pb_utils.TritonModelException(message)
        self.logger.log_info(message)

        if self.output_vocab == "audio":
            from models.stepaudio.audio_tokens import AUDIO_VOCAB_OFFSET
            from models.stepaudio.step1 import EOT_ID

            if self.vocab < AUDIO_VOCAB_OFFSET + 5120:
                raise pb_utils.TritonModelException(f"{self.name}: vocab_size {self.vocab} has no audio ids")
            mask = torch.full((self.vocab,), float("-inf"))
            mask[AUDIO_VOCAB_OFFSET : AUDIO_VOCAB_OFFSET + 5120] = 0.0
            mask[EOT_ID] = 0.0
            self._mask = mask.to(self.model.lm_head.weight.device)
        self._sem = asyncio.Semaphore(self.slots)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = threading.Event()
        self.logger.log_info(f"{self.name}: loaded {ckpt} ({self.output_vocab} out, {self.slots} slots, {device})")

    def _validate_config(self, config: dict[str, Any]) -> None:
        problems = []
        if not config.get("model_transaction_policy", {}).get("decoupled", False):
            problems.append("model_transaction_policy.decoupled must be true (streaming model)")
        outputs = {o["name"] for o in config.get("output", [])}
        problems += [f"output {o} is missing" for o in REQUIRED_OUTPUTS if o not in outputs]
        for key in ("slots", "default_max_tokens", "max_max_tokens", "threads"):
            try:
                int(_param(config, key, "0"))
            except ValueError:
                problems.append(f"parameter {key} must be an integer, is {_param(config, key, '0')!r}")
        self.outputs = outputs
        if problems:
            raise pb_utils.TritonModelException(f"{config.get('name')}: invalid config.pbtxt: " + "; ".join(problems))

    def _logits(self, ids: list[int]) -> np.ndarray:
        with self.torch.inference_mode():
            logits, _ = self.model(self.torch.tensor([ids], dtype=self.torch.long,
                                                     device=self.model.lm_head.weight.device))
        return logits[0].float().cpu().numpy()

    # ------------------------------------------------------------------ requests

    async def execute(self, requests: list[Any]) -> None:
        loop = self._loop = asyncio.get_running_loop()
        for request in requests:
            task = loop.create_task(self._serve(request))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return None

    def _job(self, request: Any) -> _Job:
        from models.stepaudio.step1 import EOT_ID
        from models.stepaudio.text_codec import encode_prompt

        text = _scalar(request, "text_input")
        raw_ids = _tensor(request, "input_ids")
        if (text is None or text == "") == (raw_ids is None):
            raise ValueError("send exactly one of text_input (templated prompt) or input_ids (prompt ids)")
        ids = encode_prompt(self.codec, text) if raw_ids is None else [int(i) for i in raw_ids.reshape(-1)]
        bad_id = next((i for i in ids if not 0 <= i < self.vocab), None)
        if bad_id is not None:
            raise ValueError(f"prompt id {bad_id} is outside the vocabulary 0..{self.vocab - 1}")
        max_tokens = int(_scalar(request, "max_tokens") or 0)
        if max_tokens < 0:
            raise ValueError(f"max_tokens={max_tokens} must be >= 0 (0: the model's default)")
        max_tokens = max_tokens or self.default_max_tokens
        if max_tokens > self.max_max_tokens:
            raise ValueError(f"max_tokens={max_tokens} is above this model's limit {self.max_max_tokens}")
        if len(ids) + max_tokens > self.model.config.max_seq_len:
            max_tokens = self.model.config.max_seq_len - len(ids)
            if max_tokens <= 0:
                raise ValueError(f"the prompt ({len(ids)} tokens) fills the context ({self.model.config.max_seq_len})")
        temperature = _scalar(request, "temperature")
        temperature = 0.7 if temperature is None else float(temperature)
        top_p = _scalar(request, "top_p")
        top_p = 1.0 if top_p is None or top_p <= 0 else float(top_p)
        top_k = int(_scalar(request, "top_k") or 0)
        if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
            raise ValueError(f"temperature={temperature} must be >= 0, top_p={top_p} in (0, 1], top_k={top_k} >= 0")
        penalty = _scalar(request, "repetition_penalty")
        if penalty not in (None, 1.0, 0.0):
            raise ValueError(f"repetition_penalty={penalty}: Step1 serves none (send 1)")
        beam = _scalar(request, "beam_width")
        if beam not in (None, 0, 1):
            raise ValueError(f"beam_width={beam}: only 1 is supported")
        seed = _scalar(request, "random_seed")
        end_id = _scalar(request, "end_id")
        bad = [encode_prompt(self.codec, w, add_bos=False) for w in _strings(request, "bad_words")]
        return _Job(ids=ids, max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                    seed=None if seed is None else int(seed), stream=bool(_scalar(request, "stream")),
                    stop=_strings(request, "stop_words"), bad=[b for b in bad if b],
                    end_ids={EOT_ID} | ({int(end_id)} if end_id is not None else set()))

    def _hook(self, job: _Job) -> Any:
        def hook(scores: Any, history: list[int]) -> Any:
            for word in job.bad:
                if len(word) == 1 or history[-(len(word) - 1):] == word[:-1]:
                    scores[word[-1]] = float("-inf")
            if self.output_vocab == "audio":
                scores = scores + self._mask
            return scores

        return hook

    def _generate(self, request: Any, sender: Any, job: _Job) -> bool:
        """Blocking (worker thread). Streams deltas; returns False when cancelled."""
        from models.stepaudio.text_codec import IncrementalText

        torch = self.torch
        gen = torch.Generator().manual_seed(job.seed if job.seed is not None else int(time.time_ns() & 0x7FFFFFFF))
        tokens = self.model.generate_stream(
            job.ids, max_new_tokens=job.max_tokens, temperature=job.temperature, top_p=job.top_p, top_k=job.top_k,
            eos_token_id=sorted(job.end_ids), repetition_guard=self.repetition_guard, generator=gen,
            logits_hook=self._hook(job))
        decoder = IncrementalText(self.codec)
        hold = max((len(s) for s in job.stop), default=1) - 1
        pending = ""  # text held back while it could still become a stop word
        job.finish_reason = "length"
        try:
            for tok in tokens:
                if self._closing.is_set() or request.is_cancelled():
                    return False
                now = time.time_ns()
                job.first_ns = job.first_ns or now
                job.last_ns = now
                job.n_out += 1
                job.out_ids.append(tok)
                pending += decoder.push([tok])
                cut = min((pending.find(s) for s in job.stop if s in pending), default=-1)
                if cut >= 0:
                    pending = pending[:cut]
                    job.finish_reason = "stop"
                    break
                ready, pending = (pending[: len(pending) - hold], pending[len(pending) - hold :]) if hold else (
                    pending, "")
                if job.stream:
                    sender.send(self._response(ready, [tok]))
                else:
                    job.text.append(ready)
            else:
                if job.n_out < job.max_tokens:
                    job.finish_reason = "stop"
        finally:
            tokens.close()
        pending += decoder.flush() if job.finish_reason != "stop" else ""
        if job.stream and pending:
            sender.send(self._response(pending, []))
        elif pending:
            job.text.append(pending)
        return True

    def _response(self, text: str, ids: list[int], extra: list[Any] | None = None) -> Any:
        tensors = [
            pb_utils.Tensor("text_output", np.array([[text.encode("utf-8")]], dtype=np.object_)),
            pb_utils.Tensor("output_ids", np.array([ids], dtype=np.int32).reshape(1, -1)),
        ]
        return pb_utils.InferenceResponse(output_tensors=tensors + (extra or []))

    def _wants(self, request: Any, output: str) -> bool:
        if output not in self.outputs:
            return False
        flag = PERF_FLAGS.get(output)
        if flag is not None and _scalar(request, flag):
            return True
        try:
            return output in request.requested_output_names()
        except Exception:  # noqa: BLE001
            return flag is None

    def _final(self, request: Any, job: _Job) -> list[Any]:
        values = {
            "num_input_tokens": np.array([[len(job.ids)]], dtype=np.int32),
            "num_output_tokens": np.array([[job.n_out]], dtype=np.int32),
            "arrival_time_ns": np.array([[job.arrival_ns]], dtype=np.int64),
            "first_token_time_ns": np.array([[job.first_ns]], dtype=np.int64),
            "last_token_time_ns": np.array([[job.last_ns]], dtype=np.int64),
            "finish_reason": np.array([[job.finish_reason.encode()]], dtype=np.object_),
        }
        return [pb_utils.Tensor(k, v) for k, v in values.items() if self._wants(request, k)]

    async def _serve(self, request: Any) -> None:
        sender = request.get_response_sender()
        final_sent = False
        try:
            job = self._job(request)
            async with self._sem:
                done = not request.is_cancelled() and await asyncio.to_thread(self._generate, request, sender, job)
            if not done:
                final_sent = True
                sender.send(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError("request cancelled", pb_utils.TritonError.CANCELLED)), flags=FINAL)
                return
            text = "" if job.stream else "".join(job.text)
            ids = [] if job.stream else job.out_ids
            response = self._response(text, ids, self._final(request, job))  # built before FINAL is promised
            final_sent = True
            sender.send(response, flags=FINAL)
        except BaseException as e:  # noqa: BLE001  (any failure, cancellation included, must still end the stream)
            if not final_sent:
                if isinstance(e, asyncio.CancelledError):
                    code, msg = pb_utils.TritonError.CANCELLED, "the model is unloading"
                else:
                    code = (pb_utils.TritonError.INVALID_ARG if isinstance(e, ValueError)
                            else pb_utils.TritonError.INTERNAL)
                    msg = str(e)
                try:
                    sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{self.name}: {msg}", code)),
                                flags=FINAL)
                except Exception as send_error:  # noqa: BLE001
                    self.logger.log_error(f"{self.name}: could not send error response: {send_error}")
            if isinstance(e, asyncio.CancelledError):
                raise

    def finalize(self) -> None:
        self._closing.set()  # worker threads stop at their next token
        loop = getattr(self, "_loop", None)
        if loop is not None and not loop.is_closed():  # tasks belong to the loop's thread: cancel them there
            loop.call_soon_threadsafe(lambda: [t.cancel() for t in list(self._tasks)])
