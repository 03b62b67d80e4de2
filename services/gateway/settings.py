"""Gateway settings (env prefix ``STEPAUDIO_GATEWAY_``)."""

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from services.kit.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    """Settings of the conversation gateway."""

    model_config = SettingsConfigDict(env_prefix="STEPAUDIO_GATEWAY_", extra="ignore")

    port: int = Field(50051, description="gRPC port of ConversationService.")
    vad_addr: str = Field("127.0.0.1:50052", description="VAD service host:port.")
    tokenizer_addr: str = Field("127.0.0.1:50053", description="Tokenizer service host:port.")
    llm_addr: str = Field("127.0.0.1:50054", description="LLM service host:port.")
    tools_addr: str = Field("127.0.0.1:50055", description="Tools service host:port.")
    tts_addr: str = Field("127.0.0.1:50056", description="TTS service host:port.")
    redis_url: str = Field("", description="Redis URL for sessions, e.g. redis://redis:6379/0; empty keeps them "
                                           "in process memory (embedded default).")
    session_ttl_s: int = Field(86400, description="Idle time after which a stored session expires, in seconds.")
    max_history_messages: int = Field(20, description="Most history messages sent to the LLM (oldest dropped).")
    max_stored_messages: int = Field(200, ge=2, description="Most history messages kept per session in the store "
                                                            "(oldest dropped).")
    max_sessions: int = Field(200, description="Concurrent sessions this gateway accepts (RESOURCE_EXHAUSTED beyond).")
    system_prompt: str = Field(
        "You are a helpful voice assistant. Reply in English with one short sentence.",
        description="Default system prompt.",
    )
    max_reply_tokens: int = Field(96, description="Default maximum reply length in LLM tokens.")
    greedy: bool = Field(True, description="Greedy LLM decoding (deterministic; best for the small embedded model).")
    temperature: float = Field(0.7, description="LLM sampling temperature when not greedy.")
    repetition_penalty: float = Field(1.0, description="LLM repetition penalty (1.0 = none).")
    llm_timeout_s: float = Field(60.0, gt=0, description="Deadline of one LLM generation, in seconds.")
    max_tool_rounds: int = Field(3, description="Most LLM -> tool -> LLM rounds in one turn.")
    tool_timeout_s: float = Field(5.0, description="Deadline of one tool call, in seconds.")
    tool_filler: str = Field("One moment.", description="Spoken while a tool runs; empty disables the filler.")
    start_threshold: float = Field(0.5, description="Default VAD speech threshold.")
    min_speech_ms: int = Field(100, description="Default speech needed to report speech started, in ms.")
    pause_ms: int = Field(64, description="Default silence that makes the user 'paused' (a speculative reply starts "
                                          "and the end-of-turn models judge the utterance), in ms: two 32 ms VAD "
                                          "frames.")
    endpoint_ms: int = Field(500, description="Default silence that ends the user's turn, in ms.")
    prefix_padding_ms: int = Field(300, description="Default audio kept before speech start for ASR, in ms.")
    min_interruption_ms: int = Field(300, description="Default user speech during a reply that cancels it, in ms.")
    noise_hold_ms: int = Field(
        150, ge=0, le=2000, description="A voiced frame during a reply holds its audio at once; if VAD has not "
                                        "confirmed speech min_speech_ms plus this later, the reply plays on, in ms."
    )
    speculative: bool = Field(True, description="Default: start replies at the pause, commit at the endpoint.")
    turn_policy: Literal["silence_timer", "end_of_turn_model"] = Field(
        "end_of_turn_model", description="Default turn policy of sessions that do not choose one: the end-of-turn "
                                         "models judge each pause (bench/bench_turns.py measures the trade-off).")
    end_of_turn_model: Literal["off", "smart_turn_v3"] = Field(
        "smart_turn_v3", description="Audio end-of-turn model sessions may choose (loaded at start when its package "
                                     "is installed: pipecat-ai, --no-deps); off: none.")
    end_of_turn_text_model: Literal["off", "smollm2"] = Field(
        "smollm2", description="Text end-of-turn model: with the audio model, it reads the transcript at each pause "
                               "(of the speculative reply) and calls the turn unfinished when the words cannot end "
                               "it ('I need a recipe for'); off: the audio model alone.")
    end_of_turn_text_threshold: float = Field(
        0.03, ge=0, lt=1, description="P(the words end the message) under which the text model calls a pause a "
                                      "hesitation (docs/TURNS.md: measured on 44 finished and 20 cut requests).")
    end_of_turn_threshold: float = Field(0.5, gt=0, lt=1, description="P(complete) at or above which the turn ends.")
    end_of_turn_max_wait_ms: int = Field(
        1200, ge=0, le=10000, description="After an 'incomplete' verdict of P=0, the turn still ends after this "
                                          "much silence (less as P nears the threshold, down to endpoint_ms).")
    incremental_asr: bool = Field(True, description="Transcribe while the user speaks (partial transcripts).")
    asr_languages: str = Field(
        "en", description="Languages the deployment's ASR transcribes (comma-separated ISO 639-1, '*' for any). A "
                          "session asking for another one gets INVALID_ARGUMENT when the LLM hears transcripts.")
    llm_input: Literal["transcript", "audio_tokens"] = Field(
        "transcript", description="What the LLM gets for a spoken turn: the ASR transcript (embedded profile), or "
                                  "the user's audio as Step-Audio dual tokens from the tokenizer's Tokenize stream "
                                  "(stepaudio profile; the transcript still reaches the client and the history).")
    asr_full_window: bool = Field(
        False, description="Ask Whisper for its full 30 s window (the walking skeleton's behaviour; slower)."
    )
    partial_interval_ms: int = Field(700, description="Audio between partial transcripts, in ms.")
    llm_prefill_partials: bool = Field(
        True, description="While the user speaks, have the LLM read the prompt with each partial transcript (one "
                          "token generated, dropped), so that at the end of the turn its prompt cache leaves only the "
                          "last words to read. Costs one short LLM request per partial.")
    first_phrase_words: int = Field(
        3, description="Speak the first phrase of a reply as soon as it has this many words and its last word can "
                       "end a phrase (not 'the', 'of', 'is'...), or a clause ends (later phrases wait for sentence "
                       "ends); 0 waits for the first sentence."
    )
    output_lead_ms: int = Field(
        150, description="Reply audio is sent at real-time pace, at most this far ahead of playback, in ms."
    )
    conversation_log: bool = Field(True, description="Write conversation events to the log spool / Kafka.")

    stage_token: str = Field("", description="Shared secret of the stages (their AUTH_TOKEN): every stage call carries "
                                             "a short-lived credential signed with it; set both from one Secret.")
    # ---- identity: with either file set, every call needs 'authorization: Bearer <API key or JWT>' ----
    api_keys_file: str = Field("", description="JSON list of {tenant, sha256 (of the key), name}: API keys, stored "
                                               "hashed; the tenant comes from the key.")
    jwks_file: str = Field("", description="JWKS (RFC 7517) file: JWTs signed by its keys are accepted (verified "
                                           "offline); the tenant comes from jwt_tenant_claim.")
    jwks_url: str = Field("", description="JWKS URL (e.g. the identity provider's jwks_uri): keys fetched off the "
                                          "event loop and cached.")
    jwks_cache_s: int = Field(300, ge=1, description="How long keys fetched from jwks_url are cached, in seconds.")
    jwt_audience: str = Field("", description="Required JWT 'aud' (empty: not checked).")
    jwt_issuer: str = Field("", description="Required JWT 'iss' (empty: not checked).")
    jwt_tenant_claim: str = Field("tenant", description="JWT claim that names the tenant.")
    # ---- quotas per tenant, shared through Redis when redis_url is set (0 = unlimited) ----
    tenant_max_sessions: int = Field(0, ge=0, description="Live sessions per tenant across gateways.")
    tenant_requests_per_min: int = Field(0, ge=0, description="Sessions opened, text turns and feedback per tenant "
                                                              "per minute.")
    tenant_audio_s_per_min: float = Field(0.0, ge=0, description="Seconds of input audio per tenant per minute.")
    # ---- limits: what one client may cost (RESOURCE_EXHAUSTED / INVALID_ARGUMENT beyond) ----
    max_realtime_factor: float = Field(
        4.0, gt=0, description="Audio may arrive at most this many times faster than real time (after the burst "
                               "below); faster is RESOURCE_EXHAUSTED.")
    max_audio_burst_ms: int = Field(
        30000, ge=0, description="Audio a client may send ahead of real time at once (a file), in ms.")
    max_utterance_ms: int = Field(
        60000, ge=1000, description="Longest user utterance; the turn ends there (and its audio is bounded), in ms.")
    max_session_s: int = Field(3600, ge=1, description="Longest session; the stream then ends with "
                                                       "DEADLINE_EXCEEDED, in seconds.")
    max_pending_events: int = Field(
        2000, ge=10, description="Events waiting for a client that does not read them; beyond, the session ends "
                                 "with RESOURCE_EXHAUSTED.")
    max_text_chars: int = Field(4000, ge=1, description="Longest TextInput or feedback comment, in characters.")
    max_system_prompt_chars: int = Field(8000, ge=1, description="Longest system_prompt, in characters.")
    max_field_chars: int = Field(256, ge=8, description="Longest session_id, voice, style, language and tenant.")
    max_allowed_tools: int = Field(64, ge=1, description="Most entries in allowed_tools.")
    # ---- deadlines: a failed or hung stage ends the turn (Error + TurnCompleted FAILED) within these ----
    end_of_input_timeout_s: float = Field(
        180.0, gt=0, description="After the client half-closes, the longest wait for the replies still running before "
                                 "the stream ends (they are cancelled and logged), in seconds.")
    asr_timeout_s: float = Field(15.0, gt=0, description="Final transcript after the end of speech, in seconds.")
    stall_timeout_s: float = Field(
        10.0, gt=0, description="Longest silence of a working stage: the LLM between events, the TTS after text "
                                "to speak, the VAD after audio, in seconds.")
    dependency_check_s: float = Field(
        2.0, gt=0, description="How often the gateway checks its stages' health (NOT_SERVING while one is down).")

    @model_validator(mode="after")
    def _turn_policy_has_a_model(self) -> "GatewaySettings":
        if self.turn_policy == "end_of_turn_model" and self.end_of_turn_model == "off":
            raise ValueError("turn_policy=end_of_turn_model needs end_of_turn_model (it is off)")
        return self
