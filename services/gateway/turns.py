"""Turn detection: VAD output in, decisions out. Pure logic: no I/O, no tasks, no clock but the audio's own offsets.

States: SILENCE -> USER_SPEAKING -> USER_PAUSED -> BOT_REPLYING (-> SILENCE when the reply ends). All times are
milliseconds of session input audio, so the same audio always gives the same decisions, whatever the load.

Decisions, in the order the session applies them:

* ``HoldReply``: a voiced frame (or confirmed speech) while the bot talks: hold its audio at once (barge-in).
* ``ResumeReply``: the held reply plays on (the frame was noise, or the speech too short to interrupt).
* ``BargeIn``: user speech lasted ``min_interruption_ms`` during a reply: cancel it, keep the played part.
* ``UserStarted``: a new utterance began (at ``offset_ms``).
* ``UserPaused``: ``pause_ms`` of silence after speech: a speculative reply may start.
* ``UserResumed``: speech again before the endpoint: the speculative reply is void; the utterance goes on.
* ``Endpoint``: the turn is over (the policy decided); commit or start the reply.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from services.vad.hysteresis import Hysteresis


class State(enum.Enum):
    SILENCE = "silence"
    USER_SPEAKING = "user_speaking"
    USER_PAUSED = "user_paused"
    BOT_REPLYING = "bot_replying"


@dataclass(frozen=True)
class HoldReply:
    offset_ms: float


@dataclass(frozen=True)
class ResumeReply:
    reason: str  # "noise" (a frame that did not grow into speech) or "false_interruption" (speech too short)


@dataclass(frozen=True)
class BargeIn:
    speech_start_ms: float


@dataclass(frozen=True)
class UserStarted:
    offset_ms: float


@dataclass(frozen=True)
class UserPaused:
    offset_ms: float


@dataclass(frozen=True)
class UserResumed:
    offset_ms: float


@dataclass(frozen=True)
class Endpoint:
    speech_end_ms: float


Decision = HoldReply | ResumeReply | BargeIn | UserStarted | UserPaused | UserResumed | Endpoint


@dataclass(frozen=True)
class TurnParams:
    """Turn detection settings of one session (session config over gateway defaults), validated."""

    hysteresis: Hysteresis
    min_speech_ms: int
    pause_ms: int
    endpoint_ms: int
    prefix_padding_ms: int
    min_interruption_ms: int
    noise_hold_ms: int
    speculative: bool
    policy: str = "silence_timer"  # silence_timer | end_of_turn_model
    end_of_turn_threshold: float = 0.5
    end_of_turn_max_wait_ms: int = 2000

    @property
    def start_threshold(self) -> float:
        return self.hysteresis.start

    @property
    def stop_threshold(self) -> float:
        return self.hysteresis.stop


class TurnPolicy(Protocol):
    """Decides when a paused user has finished the turn."""

    def endpoint_reached(self, pause_at_ms: float, last_voice_ms: float, processed_ms: float) -> bool: ...


@dataclass(frozen=True)
class SilenceTimer:
    """The endpoint comes after ``endpoint_ms`` of silence since the pause and since the last voiced frame (a
    resumption that VAD has not confirmed yet must not end the turn under the user)."""

    endpoint_ms: int

    def endpoint_reached(self, pause_at_ms: float, last_voice_ms: float, processed_ms: float) -> bool:
        return processed_ms >= max(pause_at_ms, last_voice_ms) + self.endpoint_ms


@dataclass
class EndOfTurnModel:
    """End-of-turn models judge each pause (the session asks with :meth:`asked` and answers with :meth:`judge`).

    P(complete) >= ``threshold`` ends the turn at once (unless a voiced frame came after the pause: then the
    timer, as a resumption that VAD has not confirmed must not be cut off); below it the turn ends after a silence
    that grows as P falls, from ``endpoint_ms`` just under the threshold to ``max_wait_ms`` at 0 (hesitations,
    lists, numbers). While the verdict is being computed the turn waits for
    it, at most ``max_wait_ms`` (a slow model must not let the timer cut a hesitation); a pause judged without an
    answer (no model, a failed one) or never asked about gets the silence timer."""

    endpoint_ms: int
    max_wait_ms: int
    threshold: float = 0.5
    verdicts: dict[float, float | None] = field(default_factory=dict)  # pause offset -> P(complete), None: none

    latest_pause_ms: float = -1.0

    def asked(self, pause_at_ms: float) -> None:
        """A verdict for this pause is being computed."""
        if pause_at_ms > self.latest_pause_ms:
            self.latest_pause_ms = pause_at_ms
            self.verdicts = {}

    def judge(self, pause_at_ms: float, probability: float | None) -> None:
        if pause_at_ms < self.latest_pause_ms:
            return  # a verdict that arrives after a newer pause's is stale
        self.latest_pause_ms = pause_at_ms
        self.verdicts = {pause_at_ms: probability}  # only the latest pause matters

    def endpoint_reached(self, pause_at_ms: float, last_voice_ms: float, processed_ms: float) -> bool:
        silent_since = max(pause_at_ms, last_voice_ms)
        if pause_at_ms not in self.verdicts:
            # being judged: wait for the verdict (at most max_wait); never asked: the timer
            pending = pause_at_ms == self.latest_pause_ms
            timer = max(self.max_wait_ms, self.endpoint_ms) if pending else self.endpoint_ms
            return processed_ms >= silent_since + timer
        p = self.verdicts[pause_at_ms]
        wait: float
        if p is None:
            wait = self.endpoint_ms  # judged without an answer
        elif p >= self.threshold:
            if last_voice_ms <= pause_at_ms:
                return True  # complete: no need to wait out the silence
            wait = self.endpoint_ms
        else:  # incomplete: give the user time, the more the surer the model is
            wait = float(self.max_wait_ms) - (self.max_wait_ms - self.endpoint_ms) * max(p, 0.0) / self.threshold
            wait = max(wait, self.endpoint_ms)
        return processed_ms >= silent_since + wait


def pause_verdict(audio_p: float | None, text_p: float | None, text_threshold: float,
                  threshold: float) -> float | None:
    """One P(complete) for a pause from the audio model and the text model (None: that model had no answer).

    The text model only ever says "not finished": words that cannot end a message (P under ``text_threshold``)
    pull the verdict under ``threshold``, to 0 when the audio model also hears an unfinished turn (or has no
    answer), to half the threshold when it hears a finished one: the two disagree, so the turn waits halfway
    between the silence timer and the longest wait (an ASR slip such as "how many kilometres or ten miles" is
    answered soon; a hesitation the audio model misses still gets time). Otherwise the audio model decides;
    without an audio verdict and no veto there is none (the silence timer decides)."""
    if text_p is not None and text_p < text_threshold:
        return threshold / 2 if audio_p is not None and audio_p >= threshold else 0.0
    return audio_p


def make_policy(params: TurnParams) -> TurnPolicy:
    """The session's turn policy from its parameters."""
    if params.policy == "end_of_turn_model":
        return EndOfTurnModel(params.endpoint_ms, params.end_of_turn_max_wait_ms, params.end_of_turn_threshold)
    return SilenceTimer(params.endpoint_ms)


@dataclass(frozen=True)
class VadUpdate:
    """What one VAD response says, in session audio offsets."""

    voiced_ms: Sequence[float]  # start offsets of frames at or above the start threshold
    events: Sequence[tuple[bool, float]]  # (True = speech started / False = stopped, offset), in order
    processed_ms: float  # audio the detector has scored so far
    frame_ms: float  # duration of one frame


class TurnDetector:
    """The turn state machine of one session."""

    def __init__(self, params: TurnParams, policy: TurnPolicy | None = None) -> None:
        self.params = params
        self.policy: TurnPolicy = policy or make_policy(params)
        self.state = State.SILENCE
        self.pause_at_ms: float | None = None  # where the current pause began (USER_PAUSED only)
        self.last_voice_ms = -1.0  # end of the last voiced frame
        self._barge_ms: float | None = None  # speech start of a possible interruption of the bot
        self._tentative_ms: float | None = None  # a voiced frame that held the bot's audio, not yet speech
        self._out: list[Decision] = []
        self.processed_ms = 0.0  # audio the VAD has judged so far

    @property
    def holding(self) -> bool:
        """Whether a reply's audio is held by a possible interruption."""
        return self._barge_ms is not None or self._tentative_ms is not None

    def on_vad(self, update: VadUpdate, playing: bool) -> list[Decision]:
        """Feed one VAD update; ``playing``: a committed reply is being spoken. Returns the decisions, in order."""
        self._out = []
        playing = playing and self.state in (State.BOT_REPLYING, State.SILENCE)
        if update.voiced_ms:
            if playing and not self.holding:
                self._tentative_ms = update.voiced_ms[0]
                self._out.append(HoldReply(update.voiced_ms[0]))
            self.last_voice_ms = update.voiced_ms[-1] + update.frame_ms
        for started, offset in update.events:
            if started:
                self._started(offset, playing)
            else:
                self._stopped(offset)
        self._progress(update.processed_ms)
        return self._out

    def reconsider(self) -> list[Decision]:
        """The policy learned something (an end-of-turn verdict): the endpoint may be reached now, on the audio
        already judged (a client that sent its whole question at once sends no more audio to wait for)."""
        self._out = []
        self._progress(self.processed_ms)
        return self._out

    def end_of_input(self, input_ms: float) -> list[Decision]:
        """The client half-closed: whatever the user said so far is the turn, and a reply held for a possible
        interruption is settled (interrupted by speech long enough to be one, else played on)."""
        self._out = []
        if self._barge_ms is not None:
            long_enough = input_ms - self._barge_ms >= self.params.min_interruption_ms
            self._out.append(BargeIn(self._barge_ms) if long_enough else ResumeReply("false_interruption"))
            self._barge_ms = None
        elif self._tentative_ms is not None:
            self._out.append(ResumeReply("noise"))
        self._tentative_ms = None
        if self.state in (State.USER_SPEAKING, State.USER_PAUSED):
            self._endpoint(self.pause_at_ms if self.pause_at_ms is not None else input_ms)
        return self._out

    def replies_done(self) -> None:
        """Every reply has ended: the floor is free again."""
        if self.state == State.BOT_REPLYING:
            self.state = State.SILENCE

    # ---- transitions --------------------------------------------------------------------------------------

    def _started(self, offset_ms: float, playing: bool) -> None:
        self._tentative_ms = None
        if playing and self._barge_ms is None:
            self._barge_ms = offset_ms
            self._out.append(HoldReply(offset_ms))
        if self.state == State.USER_PAUSED:
            self.state, self.pause_at_ms = State.USER_SPEAKING, None
            self._out.append(UserResumed(offset_ms))
        elif self.state in (State.SILENCE, State.BOT_REPLYING):
            self.state = State.USER_SPEAKING
            self._out.append(UserStarted(offset_ms))

    def _stopped(self, offset_ms: float) -> None:
        if self.state != State.USER_SPEAKING:
            return
        if self._barge_ms is not None:
            if offset_ms - self._barge_ms < self.params.min_interruption_ms:
                # Too short to be a barge-in: the reply plays on where it paused, the utterance is dropped.
                self._barge_ms = None
                self.state = State.BOT_REPLYING
                self._out.append(ResumeReply("false_interruption"))
                return
            # Long enough, though no progress update said so while the user spoke (the pause came within a
            # frame of min_interruption_ms): a barge-in, or the held reply would wait for ever.
            self._out.append(BargeIn(self._barge_ms))
            self._barge_ms = None
        self.state, self.pause_at_ms = State.USER_PAUSED, offset_ms
        self._out.append(UserPaused(offset_ms))

    def _progress(self, processed_ms: float) -> None:
        self.processed_ms = max(self.processed_ms, processed_ms)
        p = self.params
        if self._tentative_ms is not None and processed_ms - self._tentative_ms > p.min_speech_ms + p.noise_hold_ms:
            self._tentative_ms = None  # the frame did not grow into speech: noise
            self._out.append(ResumeReply("noise"))
        if (self._barge_ms is not None and self.state == State.USER_SPEAKING
                and processed_ms - self._barge_ms >= p.min_interruption_ms):
            self._out.append(BargeIn(self._barge_ms))
            self._barge_ms = None
        if (self.state == State.USER_PAUSED and self.pause_at_ms is not None
                and self.policy.endpoint_reached(self.pause_at_ms, self.last_voice_ms, processed_ms)):
            self._endpoint(self.pause_at_ms)

    def _endpoint(self, speech_end_ms: float) -> None:
        if self._barge_ms is not None:  # speech over a reply that became a whole turn interrupts it
            self._out.append(BargeIn(self._barge_ms))
        self.state, self.pause_at_ms, self._barge_ms = State.BOT_REPLYING, None, None
        self._out.append(Endpoint(speech_end_ms))
