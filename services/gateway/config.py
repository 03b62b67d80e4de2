"""Session configuration: validate a client's SessionConfig and resolve it over the gateway's defaults."""

from __future__ import annotations

from models.stepaudio.style import parse_style
from services.gateway.settings import GatewaySettings
from services.gateway.turns import TurnParams
from services.kit.audio import SUPPORTED_RATES
from services.kit.errors import FailedPrecondition, InvalidArgument, NotFound
from services.vad.hysteresis import Hysteresis
from stepaudio.common.v1 import audio_pb2
from stepaudio.conversation.v1 import conversation_pb2 as pb
from stepaudio.llm.v1 import llm_pb2
from stepaudio.tools.v1 import tools_pb2
from stepaudio.tts.v1 import tts_pb2

# Upper bounds of the TurnDetection durations, in ms (a client cannot make a turn that never ends).
TURN_LIMITS_MS = {"min_speech_ms": 2000, "pause_ms": 5000, "endpoint_ms": 10000, "prefix_padding_ms": 2000,
                  "min_interruption_ms": 5000}


def resolve_turn_params(config: pb.SessionConfig, s: GatewaySettings) -> TurnParams:
    """The session's turn detection: its TurnDetection fields (0 = gateway default), validated and bounded."""
    td = config.turn_detection
    try:
        hysteresis = Hysteresis.resolve(td.start_threshold, td.stop_threshold, s.start_threshold)
    except ValueError as e:
        raise InvalidArgument(f"turn_detection: {e}") from None
    values = {name: getattr(td, name) or getattr(s, name) for name in TURN_LIMITS_MS}
    for name, value in values.items():
        if not 0 <= value <= TURN_LIMITS_MS[name]:
            raise InvalidArgument(f"turn_detection.{name}={value} must be in [0, {TURN_LIMITS_MS[name]}] ms")
    if values["endpoint_ms"] < values["pause_ms"]:
        raise InvalidArgument(f"turn_detection: endpoint_ms={values['endpoint_ms']} must be >= "
                              f"pause_ms={values['pause_ms']}")
    policy = {pb.TURN_POLICY_SILENCE_TIMER: "silence_timer",
              pb.TURN_POLICY_END_OF_TURN_MODEL: "end_of_turn_model"}.get(td.policy, s.turn_policy)
    if td.policy not in (pb.TURN_POLICY_UNSPECIFIED, pb.TURN_POLICY_SILENCE_TIMER, pb.TURN_POLICY_END_OF_TURN_MODEL):
        raise InvalidArgument(f"turn_detection.policy={td.policy} is not a TurnPolicy value")
    if policy == "end_of_turn_model" and s.end_of_turn_model == "off":
        raise FailedPrecondition("turn_detection.policy=TURN_POLICY_END_OF_TURN_MODEL: this gateway has no "
                                 "end-of-turn model (STEPAUDIO_GATEWAY_END_OF_TURN_MODEL=off); use "
                                 "TURN_POLICY_SILENCE_TIMER")
    return TurnParams(hysteresis=hysteresis, noise_hold_ms=s.noise_hold_ms,
                      speculative=td.speculative if config.HasField("turn_detection") else s.speculative,
                      policy=policy, end_of_turn_threshold=s.end_of_turn_threshold,
                      end_of_turn_max_wait_ms=s.end_of_turn_max_wait_ms, **values)


def validate_config(config: pb.SessionConfig, settings: GatewaySettings, tool_specs: dict[str, tools_pb2.Tool],
                    voices: dict[str, tts_pb2.VoiceInfo]) -> TurnParams:
    """Check a SessionConfig; raises InvalidArgument / NotFound with what to fix. Returns its turn parameters."""
    for name in ("session_id", "voice", "style", "language", "tenant"):
        if len(getattr(config, name)) > settings.max_field_chars:
            raise InvalidArgument(f"{name} has {len(getattr(config, name))} characters; the limit is "
                                  f"{settings.max_field_chars}")
    if len(config.system_prompt) > settings.max_system_prompt_chars:
        raise InvalidArgument(f"system_prompt has {len(config.system_prompt)} characters; the limit is "
                              f"{settings.max_system_prompt_chars}")
    if len(config.allowed_tools) > settings.max_allowed_tools:
        raise InvalidArgument(f"allowed_tools has {len(config.allowed_tools)} entries; the limit is "
                              f"{settings.max_allowed_tools}")
    fmt = config.input_format
    rate = fmt.sample_rate_hz or 16000
    if rate not in SUPPORTED_RATES:
        raise InvalidArgument(f"input_format.sample_rate_hz={rate} is not supported; use one of "
                              f"{', '.join(map(str, SUPPORTED_RATES))}")
    if fmt.encoding not in (0, audio_pb2.AUDIO_ENCODING_LINEAR_PCM16) or fmt.channels not in (0, 1):
        raise InvalidArgument("input_format: send mono AUDIO_ENCODING_LINEAR_PCM16")
    out = config.output_format.sample_rate_hz
    if out and out not in SUPPORTED_RATES:
        raise InvalidArgument(f"output_format.sample_rate_hz={out} is not supported; use 0 (native 22050) or one "
                              f"of {', '.join(map(str, SUPPORTED_RATES))}")
    if config.voice and voices and config.voice not in voices:
        raise NotFound(f"unknown voice {config.voice!r}; available voices: {', '.join(sorted(voices))}")
    for name in config.allowed_tools:
        if name != "*" and name not in tool_specs:
            raise NotFound(f"unknown tool {name!r} in allowed_tools; registered tools: "
                           f"{', '.join(sorted(tool_specs)) or 'none'}")
    try:
        parse_style(config.style)
    except ValueError as e:
        raise InvalidArgument(str(e)) from None
    if config.max_reply_tokens < 0:
        raise InvalidArgument("max_reply_tokens must not be negative")
    check_language(config.language, settings)
    return resolve_turn_params(config, settings)


def check_language(language: str, settings: GatewaySettings) -> None:
    """Refuse a language the ASR would turn into gibberish, when the LLM hears transcripts (with audio tokens the
    LLM hears the audio itself; the transcript only goes to the history)."""
    allowed = {c.strip().lower() for c in settings.asr_languages.split(",") if c.strip()}
    code = language.split("-")[0].lower()
    if code and "*" not in allowed and code not in allowed and settings.llm_input == "transcript":
        raise InvalidArgument(f"language {language!r} is not supported here (speech is transcribed in "
                              f"{', '.join(sorted(allowed))}): leave language empty or use one of those")


def tool_definitions(config: pb.SessionConfig, tool_specs: dict[str, tools_pb2.Tool]) -> list[llm_pb2.ToolDefinition]:
    """The tools the session allows, as the LLM sees them."""
    allowed = set(config.allowed_tools)
    chosen = list(tool_specs.values()) if "*" in allowed else [t for t in tool_specs.values() if t.name in allowed]
    return [llm_pb2.ToolDefinition(name=t.name, description=t.description,
                                   parameters_json_schema=t.parameters_json_schema) for t in chosen]


def opening_request(system_prompt: str, words: str, tools: list[llm_pb2.ToolDefinition]) -> llm_pb2.GenerateRequest:
    """A new conversation's first LLM request (system prompt, tools, the user's words) that generates one token:
    it leaves the system prompt and tools in the LLM's prompt cache, as every session's prompt starts with them."""
    return llm_pb2.GenerateRequest(
        messages=[llm_pb2.ChatMessage(role=llm_pb2.ROLE_SYSTEM, content=[llm_pb2.ContentPart(text=system_prompt)]),
                  llm_pb2.ChatMessage(role=llm_pb2.ROLE_USER, content=[llm_pb2.ContentPart(text=words)])],
        tools=tools, sampling=llm_pb2.SamplingParams(max_tokens=1, greedy=True))
