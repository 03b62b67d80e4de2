"""LLM service logic: request -> prompt (chat template) -> backend stream -> text deltas, tool calls, finish.

Transport-free: server.py turns the events into GenerateResponse messages. One span per generation with the model
name, token counts and time to first token.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import structlog

from services.kit import telemetry
from services.kit.errors import InvalidArgument
from services.llm.backends import LlmBackend
from services.llm.contract import GenerationParams
from services.llm.settings import LlmSettings
from services.llm.templates import TEMPLATES, TOOL_CALL_CLOSE, ChatTemplate, render
from services.llm.toolcalls import ToolCallParser
from stepaudio.llm.v1 import llm_pb2

log = structlog.get_logger("stepaudio.llm")

_ttft = telemetry.meter().create_histogram(
    "stepaudio.llm.time_to_first_token", unit="ms", description="Time from request to first text from the model"
)
_tokens = telemetry.meter().create_counter("stepaudio.llm.completion_tokens", description="Generated tokens")

_FINISH = {
    "stop": llm_pb2.FINISH_REASON_STOP,
    "length": llm_pb2.FINISH_REASON_LENGTH,
    "cancelled": llm_pb2.FINISH_REASON_CANCELLED,
}


def default_model(settings: LlmSettings) -> str:
    return settings.model or ("step_audio_chat" if settings.profile == "stepaudio" else "embedded_llm")


def template_for(settings: LlmSettings) -> ChatTemplate:
    name = settings.template or settings.profile
    if name not in TEMPLATES:
        raise ValueError(f"unknown chat template {name!r}: use one of smollm2, step1")
    return TEMPLATES[name]


class Generator:
    """Builds prompts and runs generations on the backend."""

    def __init__(self, backend: LlmBackend, settings: LlmSettings) -> None:
        self.backend = backend
        self.settings = settings
        self.template = template_for(settings)
        self.model = default_model(settings)

    def params(self, request: llm_pb2.GenerateRequest) -> GenerationParams:
        s = request.sampling
        st = self.settings
        if s.max_tokens < 0 or s.max_tokens > st.max_tokens_limit:
            raise InvalidArgument(f"sampling.max_tokens={s.max_tokens}: use 1..{st.max_tokens_limit} (0 = default)")
        if s.temperature < 0 or s.temperature > 5:
            raise InvalidArgument(f"sampling.temperature={s.temperature}: use 0..5 (0 = default)")
        if not 0 <= s.top_p <= 1:
            raise InvalidArgument(f"sampling.top_p={s.top_p}: use 0..1 (0 = default)")
        if s.top_k < 0:
            raise InvalidArgument(f"sampling.top_k={s.top_k} must be >= 0")
        if s.repetition_penalty < 0:
            raise InvalidArgument(f"sampling.repetition_penalty={s.repetition_penalty} must be >= 0")
        stops = list(self.template.stop_words) + [w for w in s.stop if w]
        if request.tools:
            stops.append(TOOL_CALL_CLOSE)
        return GenerationParams(
            max_tokens=s.max_tokens or st.default_max_tokens,
            temperature=0.0 if s.greedy else (s.temperature or st.default_temperature),
            top_p=s.top_p or st.default_top_p,
            top_k=1 if s.greedy else s.top_k,
            repetition_penalty=s.repetition_penalty or 1.0,
            seed=s.seed or None,
            stop_words=tuple(dict.fromkeys(stops)),
            end_id=self.template.end_id,
            stream=True,
            perf_metrics=True,
        )

    async def generate(
        self, request: llm_pb2.GenerateRequest, timeout_s: float | None = None
    ) -> AsyncIterator[llm_pb2.GenerateResponse]:
        params = self.params(request)
        prompt = render(list(request.messages), list(request.tools), self.template, self.settings.system_prompt)
        model = request.model or self.model
        timeout = min(timeout_s or self.settings.request_timeout_s, self.settings.request_timeout_s)
        request_id = f"{request.session_id or 'llm'}-{uuid.uuid4().hex[:12]}"
        parser = ToolCallParser(allowed={t.name for t in request.tools} or None, id_prefix=request_id)
        t0 = time.monotonic()
        ttft_ms = 0.0
        with telemetry.tracer().start_as_current_span("llm.generate") as span:
            span.set_attribute("gen_ai.request.model", model)
            span.set_attribute("gen_ai.request.max_tokens", params.max_tokens)
            span.set_attribute("stepaudio.llm.template", self.template.name)
            span.set_attribute("stepaudio.llm.request_id", request_id)
            if request.session_id:
                span.set_attribute("stepaudio.session_id", request.session_id)
            done = None
            async for chunk in self.backend.generate(prompt, params, model, request_id, timeout):
                if chunk.done:
                    done = chunk
                    continue
                if not ttft_ms:
                    ttft_ms = (time.monotonic() - t0) * 1000
                    span.add_event("first_token")
                for ev in parser.feed(chunk.text):
                    if ev.text:
                        yield llm_pb2.GenerateResponse(text_delta=ev.text)
                    elif ev.tool_call:
                        yield _tool_call_response(ev.tool_call)
            for ev in parser.finish():
                if ev.text:
                    yield llm_pb2.GenerateResponse(text_delta=ev.text)
                elif ev.tool_call:
                    yield _tool_call_response(ev.tool_call)
            total_ms = (time.monotonic() - t0) * 1000
            prompt_tokens = done.prompt_tokens if done else 0
            completion_tokens = done.completion_tokens if done else 0
            if parser.calls:
                reason = llm_pb2.FINISH_REASON_TOOL_CALLS
            elif done and done.finish_reason in _FINISH:
                reason = _FINISH[done.finish_reason]
            else:
                reason = (
                    llm_pb2.FINISH_REASON_LENGTH
                    if completion_tokens >= params.max_tokens
                    else llm_pb2.FINISH_REASON_STOP
                )
            span.set_attribute("gen_ai.usage.input_tokens", prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", completion_tokens)
            span.set_attribute("stepaudio.llm.time_to_first_token_ms", round(ttft_ms, 2))
            span.set_attribute("stepaudio.llm.tool_calls", len(parser.calls))
            span.set_attribute("gen_ai.response.finish_reasons", [llm_pb2.FinishReason.Name(reason)])
            if done and done.endpoint:
                span.set_attribute("server.address", done.endpoint)
            if ttft_ms:
                _ttft.record(ttft_ms, {"model": model})
            _tokens.add(completion_tokens, {"model": model})
            log.info(
                "generated",
                model=model,
                request_id=request_id,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                ttft_ms=round(ttft_ms, 1),
                total_ms=round(total_ms, 1),
                tool_calls=len(parser.calls),
                dropped_tool_calls=parser.dropped,
            )
            yield llm_pb2.GenerateResponse(
                finish=llm_pb2.Finish(
                    reason=reason,
                    usage=llm_pb2.Usage(
                        prompt_tokens=prompt_tokens,
                        completion_tokens=completion_tokens,
                        time_to_first_token_ms=ttft_ms,
                        total_ms=total_ms,
                    ),
                )
            )


def _tool_call_response(call: object) -> llm_pb2.GenerateResponse:
    return llm_pb2.GenerateResponse(
        tool_call=llm_pb2.ToolCall(id=call.id, name=call.name, arguments_json=call.arguments_json)  # type: ignore[attr-defined]
    )
