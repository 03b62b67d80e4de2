"""Preference-pair rules: join a turn with its regenerations and feedback, decide chosen/rejected.

Candidates of a turn: alternative 0 (the original reply, TurnRecorded) and 1..n (ReplyRegenerated). Feedback
(FeedbackGiven, applied in event-time order, last one wins) sets a candidate's rating (1-5), thumbs (up = 5,
down = 1 when there is no rating) and regenerate flag. Pairs, each with a ``reason``:

- ``deaf_hacking``: the user audio was clearly transcribed (confidence >= ``deaf_confidence``, non-empty,
  not redacted) but the reply says it did not hear / understand ("I didn't catch that", "could you repeat",
  "没听清" ...). That reply is always rejected, whatever its rating; chosen is the best other candidate, or
  unset when there is none (a rejected-only example, as in the Step-Audio paper).
- ``rating`` / ``thumbs``: two non-deaf candidates with different scores: the higher one is chosen
  (``rating`` when both scores are explicit ratings, ``thumbs`` otherwise).
- ``regenerate``: the user asked to regenerate candidate k and candidate k+1 exists: k+1 is chosen over k,
  unless their scores already decide (then the score rule applies) or k+1 scored 2 or less.
- ``barge_in`` (a weak negative signal): the user talked over the original reply (TurnRecorded.interruption) and an
  alternative exists: alternative 1 is chosen over it when no score or regenerate request decides them and the
  alternative did not score 2 or less. An interruption alone makes no pair.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

from stepaudio.logs.v1 import logs_pb2

_NS = uuid.UUID("6f1c2b1e-3c55-4b4e-9d55-7a0f3d1e2a10")
DEAF_RE = re.compile(
    r"\b(didn'?t|did not|couldn'?t|could not|can'?t|cannot|wasn'?t able to)\s+(quite\s+|really\s+)?"
    r"(hear|catch|make out|understand)\b"
    r"|\b(say|repeat) (that|it|this) again\b|\bcould you (please )?repeat\b|\bcome again\?"
    r"|\bsorry,? what did you say\b|\bi missed (that|what you said)\b|\bnot (hear|catch)(ing)? you\b"
    r"|没听清|听不清|没有听清|再说一遍|没听到",
    re.IGNORECASE,
)


def is_deaf_reply(text: str) -> bool:
    """True when the reply claims it did not hear or understand the user."""
    return bool(DEAF_RE.search(text or ""))


@dataclass
class Candidate:
    """One reply to a turn and the feedback it got."""

    alt: int
    text: str
    event_id: str
    audio: logs_pb2.AudioRef | None = None
    rating: int = 0
    thumbs: int = logs_pb2.THUMBS_UNSPECIFIED
    regenerate: bool = False
    feedback_ids: list[str] = field(default_factory=list)

    def score(self) -> float | None:
        """Rating, else thumbs (up 5, down 1), else None."""
        if self.rating:
            return float(self.rating)
        if self.thumbs == logs_pb2.THUMBS_UP:
            return 5.0
        if self.thumbs == logs_pb2.THUMBS_DOWN:
            return 1.0
        return None

    def to_proto(self) -> logs_pb2.PreferenceCandidate:
        """As a PreferenceCandidate message."""
        c = logs_pb2.PreferenceCandidate(
            text=self.text, score=self.score() or 0.0, source_event_id=self.event_id, alternative_index=self.alt
        )
        if self.audio is not None and self.audio.uri:
            c.audio.CopyFrom(self.audio)
        return c


def _time(ev: logs_pb2.ConversationEvent) -> int:
    return ev.occurred_at.ToNanoseconds()


def build_pairs(
    events: list[logs_pb2.ConversationEvent], *, deaf_confidence: float = 0.8
) -> list[logs_pb2.PreferencePair]:
    """Pairs for one turn from all its events (TurnRecorded, ReplyRegenerated, FeedbackGiven), any order."""
    turn = next((e for e in events if e.WhichOneof("payload") == "turn_recorded"), None)
    if turn is None:
        return []
    tr = turn.turn_recorded
    cands: dict[int, Candidate] = {
        0: Candidate(0, tr.reply_text, turn.event_id, tr.reply_audio if tr.HasField("reply_audio") else None)
    }
    for e in sorted(events, key=_time):
        if e.WhichOneof("payload") == "reply_regenerated":
            r = e.reply_regenerated
            if r.alternative_index > 0 and r.alternative_index not in cands:
                cands[r.alternative_index] = Candidate(
                    r.alternative_index,
                    r.reply_text,
                    e.event_id,
                    r.reply_audio if r.HasField("reply_audio") else None,
                    rating=r.rating,
                )
    for e in sorted(events, key=_time):
        if e.WhichOneof("payload") == "feedback_given":
            f = e.feedback_given
            c = cands.get(f.target_alternative_index)
            if c is None:
                continue
            c.feedback_ids.append(e.event_id)
            if f.rating:
                c.rating = f.rating
            if f.thumbs:
                c.thumbs = f.thumbs
            if f.regenerate_requested:
                c.regenerate = True

    transcript = tr.user_transcript.strip()
    clear = tr.transcript_confidence >= deaf_confidence and bool(transcript) and transcript != "[REDACTED]"
    deaf = {a for a, c in cands.items() if clear and is_deaf_reply(c.text)}
    good = [c for a, c in sorted(cands.items()) if a not in deaf]
    decided: dict[tuple[int, int | None], str] = {}  # (rejected alt, chosen alt) -> reason

    def best(pool: list[Candidate]) -> Candidate | None:
        if not pool:
            return None
        return max(pool, key=lambda c: (c.score() if c.score() is not None else 3.0, c.alt))

    for d in sorted(deaf):
        ch = best(good)
        decided[(d, ch.alt if ch else None)] = "deaf_hacking"
    for i, x in enumerate(good):
        for y in good[i + 1 :]:
            sa, sb = x.score(), y.score()
            if sa is None or sb is None or sa == sb:
                continue
            hi, lo = (x, y) if sa > sb else (y, x)
            decided[(lo.alt, hi.alt)] = "rating" if (x.rating and y.rating) else "thumbs"
    for x in good:
        nxt = cands.get(x.alt + 1)
        if not x.regenerate or nxt is None or nxt.alt in deaf:
            continue
        sa, sb = x.score(), nxt.score()
        if sa is not None and sb is not None:
            continue
        if sb is not None and sb <= 2:
            continue
        decided.setdefault((x.alt, nxt.alt), "regenerate")
    alt1 = cands.get(1)
    if tr.HasField("interruption") and alt1 is not None and 0 not in deaf and 1 not in deaf:
        s0, s1 = cands[0].score(), alt1.score()
        if s0 is None and (s1 is None or s1 > 2):
            decided.setdefault((0, 1), "barge_in")

    all_ids = sorted(
        {turn.event_id}
        | {e.event_id for e in events if e.WhichOneof("payload") in ("reply_regenerated", "feedback_given")}
    )
    pairs = []
    for (rej, cho), reason in sorted(decided.items(), key=lambda kv: (kv[0][0], kv[0][1] or -1)):
        p = logs_pb2.PreferencePair(
            pair_id=str(uuid.uuid5(_NS, f"{turn.session_id}/{turn.turn_id}/{cho}/{rej}")),
            session_id=turn.session_id,
            turn_id=turn.turn_id,
            tenant=turn.tenant,
            prompt_text=tr.user_transcript,
            prompt_confidence=tr.transcript_confidence,
            rejected=cands[rej].to_proto(),
            reason=reason,
            model_version=turn.model_version,
        )
        if cho is not None:
            p.chosen.CopyFrom(cands[cho].to_proto())
        if tr.HasField("user_audio"):
            p.prompt_audio.CopyFrom(tr.user_audio)
        p.occurred_at.CopyFrom(turn.occurred_at)
        p.source_event_ids.extend(all_ids)
        pairs.append(p)
    return pairs
