"""What a turn reports: the TurnCompleted event, span attributes, Prometheus metrics and the conversation log."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.gateway.reply import Outcome, Reply
from services.kit.telemetry import meter
from stepaudio.conversation.v1 import conversation_pb2 as pb
from stepaudio.logs.v1 import logs_pb2

_ttfa = meter().create_histogram("stepaudio.turn.time_to_first_audio", unit="s",
                                 description="End of user speech to first reply audio")
_stage_hist = meter().create_histogram("stepaudio.turn.stage", unit="s", description="Per-stage turn timings")
_spec = meter().create_counter("stepaudio.speculative.replies", description="Speculative replies by outcome")
_interruptions = meter().create_counter("stepaudio.interruptions", description="Barge-ins by kind (true/false)")

# Turn timing name -> logs.v1 TurnLatencies field, for the names that differ.
_LOG_LATENCY = {"time_to_first_audio_ms": "first_audio_ms"}

_THUMBS = {1: logs_pb2.THUMBS_UP, -1: logs_pb2.THUMBS_DOWN}


def speculation(outcome: str) -> None:
    """A speculative reply was committed or discarded."""
    _spec.add(1, {"outcome": outcome})


def interruption(kind: str) -> None:
    """A barge-in: ``true`` (the reply was cancelled) or ``false`` (too short; it played on)."""
    _interruptions.add(1, {"kind": kind})


def turn_completed(reply: Reply) -> pb.TurnCompleted:
    """The client's TurnCompleted, with the turn's timings on the span and in the metrics too."""
    timings = dict(reply.timings.items())
    if reply.timings.time_to_first_audio_ms is not None:
        _ttfa.record(reply.timings.time_to_first_audio_ms / 1000, {"speculative": str(reply.speculative)})
    for name, ms in timings.items():
        reply.span.set_attribute(f"stepaudio.{name}", ms)
        _stage_hist.record(ms / 1000, {"stage": name.removesuffix("_ms")})
    done = pb.TurnCompleted(turn_id=reply.turn_id, user_text=reply.user_text, reply_text=reply.spoken_text(),
                            outcome=reply.outcome.value, reply_audio_ms=int(reply.playout.sent_ms),
                            speculative=reply.speculative, speculative_discards=reply.discards,
                            wasted_ms=reply.wasted_ms)
    for name, ms in timings.items():
        done.timings.add(name=name.removesuffix("_ms"), duration_ms=ms)
    return done


@dataclass(frozen=True)
class Regeneration:
    """A reply that answers an earlier turn again: the turn it re-answers and which alternative it is."""

    target_turn_id: str
    alternative_index: int


class ConversationReport:
    """The conversation-log events of one session (no-ops without a logger)."""

    def __init__(self, convlog: Any, session_id: str, config: pb.SessionConfig, rate: int) -> None:
        self.log = convlog
        self.session_id = session_id
        self.consent = config.consent
        self.tenant = config.tenant or None
        self.rate = rate

    def turn(self, reply: Reply, regeneration: Regeneration | None) -> None:
        if self.log is None or not reply.user_text or reply.outcome == Outcome.DISCARDED:
            return
        from services.convlog import AudioClip

        audio = AudioClip(bytes(reply.playout.audio), reply.playout.rate) if reply.playout.audio else None
        spoken = reply.spoken_text()
        if regeneration is not None:
            self.log.reply_regenerated(
                session_id=self.session_id, turn_id=regeneration.target_turn_id, reply_text=spoken,
                alternative_index=regeneration.alternative_index, reply_audio=audio, consent=self.consent,
                tenant=self.tenant)
            return
        cut = reply.played_ms_at_cut
        self.log.turn_recorded(
            session_id=self.session_id, turn_id=reply.turn_id, user_transcript=reply.user_text,
            transcript_confidence=reply.confidence, reply_text=spoken,
            tool_calls=[vars(c) for c in reply.tool_calls],
            user_audio=AudioClip(reply.user_audio, self.rate) if reply.user_audio else None, reply_audio=audio,
            interruption=(int(cut), spoken) if reply.outcome == Outcome.INTERRUPTED and cut is not None else None,
            latencies={_LOG_LATENCY.get(k, k): int(v) for k, v in reply.timings.items()}, consent=self.consent,
            tenant=self.tenant)

    def feedback(self, fb: pb.Feedback, target: Regeneration) -> None:
        if self.log is None:
            return
        self.log.feedback(session_id=self.session_id, turn_id=target.target_turn_id, rating=fb.rating,
                          thumbs=_THUMBS.get(fb.thumbs, logs_pb2.THUMBS_UNSPECIFIED), regenerate=fb.regenerate,
                          comment=fb.comment, alternative_index=target.alternative_index, consent=self.consent,
                          tenant=self.tenant)

    def session_ended(self, reason: int, turns: int, duration_ms: float) -> None:
        if self.log is None:
            return
        self.log.session_ended(session_id=self.session_id, reason=reason, turn_count=turns,
                               duration_ms=int(duration_ms), consent=self.consent, tenant=self.tenant)
