"""BLS entry point for a Step1 model on TensorRT-LLM: the same decoupled contract as models/triton/embedded_llm.

Per request (async, one task each): Step1 tokenization (``<audio_X>`` -> 65536 + X, BOS prepended), one streaming
request to ``tensorrt_llm_model_name`` (inflight batching), incremental detokenization, stop words removed from the
text (held back while they could still be forming), cancellation forwarded (``request.is_cancelled()`` -> the
TensorRT-LLM response iterator is cancelled; so does a request with ``stop`` true for the same request id, which a
client sends instead of cancelling its gRPC call), and exactly one FINAL response with the perf outputs.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step1_text import EOT_ID, IncrementalDecoder, encode, words_list  # noqa: E402

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def _scalar(request, name):
    t = pb_utils.get_input_tensor_by_name(request, name)
    if t is None or t.as_numpy().size == 0:
        return None
    v = t.as_numpy().reshape(-1)[0]
    return v.decode("utf-8") if isinstance(v, bytes) else v.item()


def _strings(request, name):
    t = pb_utils.get_input_tensor_by_name(request, name)
    if t is None:
        return []
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in t.as_numpy().reshape(-1) if v]


def _t(name, value, dtype):
    return pb_utils.Tensor(name, np.array(value, dtype=dtype))


class TritonPythonModel:
    def initialize(self, args):
        from transformers import AutoTokenizer

        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        if not config.get("model_transaction_policy", {}).get("decoupled"):
            raise pb_utils.TritonModelException("the BLS model must be decoupled")
        tokenizer_dir = params.get("tokenizer_dir", "")
        if not tokenizer_dir or not Path(tokenizer_dir).exists():
            raise pb_utils.TritonModelException(
                f"tokenizer_dir {tokenizer_dir!r} does not exist (make_repo.py --tokenizer-dir)"
            )
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=True)
        self.trtllm = params["tensorrt_llm_model_name"]
        self.default_max_tokens = int(params.get("default_max_tokens") or 256)
        self.max_max_tokens = int(params.get("max_max_tokens") or 4096)
        self.outputs = {o["name"] for o in config.get("output", [])}
        self.tasks = set()
        self.stopped = {}  # request id -> [stop asked] for the requests running
        self.early_stops = {}  # request id -> monotonic time of a stop that came before its request (30 s at most)

    async def execute(self, requests):
        loop = asyncio.get_running_loop()
        for request in requests:
            task = loop.create_task(self._serve(request))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return None

    def _trtllm_request(self, request, ids, max_tokens):
        stop = _strings(request, "stop_words")
        bad = _strings(request, "bad_words")
        inputs = [
            _t("input_ids", [ids], np.int32),
            _t("input_lengths", [[len(ids)]], np.int32),
            _t("request_output_len", [[max_tokens]], np.int32),
            _t("end_id", [[_scalar(request, "end_id") or EOT_ID]], np.int32),
            _t("pad_id", [[_scalar(request, "pad_id") or EOT_ID]], np.int32),
            _t("streaming", [[True]], bool),
            _t("beam_width", [[1]], np.int32),
        ]
        if stop:
            inputs.append(pb_utils.Tensor("stop_words_list", words_list(self.tokenizer, stop)[np.newaxis]))
        if bad:
            inputs.append(pb_utils.Tensor("bad_words_list", words_list(self.tokenizer, bad)[np.newaxis]))
        for src, dst, dtype in (
            ("temperature", "temperature", np.float32),
            ("top_k", "runtime_top_k", np.int32),
            ("top_p", "runtime_top_p", np.float32),
            ("repetition_penalty", "repetition_penalty", np.float32),
            ("presence_penalty", "presence_penalty", np.float32),
            ("frequency_penalty", "frequency_penalty", np.float32),
            ("length_penalty", "len_penalty", np.float32),
            ("min_length", "min_length", np.int32),
            ("random_seed", "random_seed", np.uint64),
        ):
            v = _scalar(request, src)
            if v is not None:
                inputs.append(_t(dst, [[v]], dtype))
        return pb_utils.InferenceRequest(
            model_name=self.trtllm, inputs=inputs, requested_output_names=["output_ids", "sequence_length"]
        ), stop

    async def _serve(self, request):
        sender = request.get_response_sender()
        if _scalar(request, "stop"):
            if request.request_id() in self.stopped:
                self.stopped[request.request_id()][0] = True
            else:  # the stop overtook its request (separate streams): the request ends as soon as it starts
                now = time.monotonic()
                self.early_stops = {r: t for r, t in self.early_stops.items() if now - t <= 30.0}
                if len(self.early_stops) < 1024:
                    self.early_stops[request.request_id()] = now
            sender.send(flags=FINAL)
            return
        early = self.early_stops.pop(request.request_id(), None)
        stop_asked = self.stopped[request.request_id()] = [early is not None and time.monotonic() - early <= 30.0]
        try:
            await self._generate(request, sender, stop_asked)
        finally:
            if self.stopped.get(request.request_id()) is stop_asked:
                del self.stopped[request.request_id()]

    async def _generate(self, request, sender, stop_asked):
        arrival = time.time_ns()
        first_ns = last_ns = 0
        final_sent = False
        try:
            prompt = _scalar(request, "text_input")
            if not prompt:
                raise ValueError("text_input is empty: send the chat-templated prompt")
            max_tokens = int(_scalar(request, "max_tokens") or 0) or self.default_max_tokens
            if max_tokens > self.max_max_tokens:
                raise ValueError(f"max_tokens={max_tokens} is above this model's limit {self.max_max_tokens}")
            if (_scalar(request, "beam_width") or 1) != 1:
                raise ValueError("only beam_width 1 is supported")
            stream = bool(_scalar(request, "stream"))
            ids = encode(self.tokenizer, prompt)
            trt_request, stop_words = self._trtllm_request(request, ids, max_tokens)
            decoder = IncrementalDecoder(self.tokenizer)
            held = ""  # text that may be the start of a stop word
            sent: list[str] = []
            n_out = 0
            cancelled = False
            responses = await trt_request.async_exec(decoupled=True)
            async for response in responses:
                if request.is_cancelled() or stop_asked[0]:
                    cancelled = True
                    if hasattr(responses, "cancel"):
                        responses.cancel()
                    break
                if response.has_error():
                    raise RuntimeError(response.error().message())
                out = pb_utils.get_output_tensor_by_name(response, "output_ids")
                if out is None:
                    continue
                new = [int(i) for i in out.as_numpy().reshape(-1) if int(i) != EOT_ID]
                if not new:
                    continue
                now = time.time_ns()
                first_ns = first_ns or now
                last_ns = now
                n_out += len(new)
                held += decoder.push(new)
                cut = next((held.index(w) for w in stop_words if w in held), -1)
                if cut >= 0:
                    held = held[:cut]
                    stop_words = []  # TensorRT-LLM stops after the stop word; nothing more to hold back
                keep = max((k for w in stop_words for k in range(1, len(w)) if held.endswith(w[:k])), default=0)
                ready, held = held[: len(held) - keep], held[len(held) - keep :]
                if ready:
                    sent.append(ready)
                    if stream:
                        sender.send(pb_utils.InferenceResponse(output_tensors=[self._text(ready)]))
            if cancelled:
                final_sent = True
                err = pb_utils.TritonError("request cancelled", pb_utils.TritonError.CANCELLED)
                sender.send(pb_utils.InferenceResponse(error=err), flags=FINAL)
                return
            sent.append(held)
            text = held if stream else "".join(sent)
            reason = "length" if n_out >= max_tokens else "stop"
            extra = {
                "num_input_tokens": np.array([[len(ids)]], dtype=np.int32),
                "num_output_tokens": np.array([[n_out]], dtype=np.int32),
                "arrival_time_ns": np.array([[arrival]], dtype=np.int64),
                "first_token_time_ns": np.array([[first_ns]], dtype=np.int64),
                "last_token_time_ns": np.array([[last_ns]], dtype=np.int64),
                "finish_reason": np.array([[reason.encode()]], dtype=np.object_),
            }
            tensors = [self._text(text)] + [pb_utils.Tensor(k, v) for k, v in extra.items() if k in self.outputs]
            final_sent = True
            sender.send(pb_utils.InferenceResponse(output_tensors=tensors), flags=FINAL)
        except Exception as e:  # noqa: BLE001
            if not final_sent:
                code = pb_utils.TritonError.INVALID_ARG if isinstance(e, ValueError) else pb_utils.TritonError.INTERNAL
                sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e), code)), flags=FINAL)

    @staticmethod
    def _text(text):
        return pb_utils.Tensor("text_output", np.array([[text.encode("utf-8")]], dtype=np.object_))

    def finalize(self):
        for task in list(self.tasks):
            task.cancel()
