"""A reply handle: one attempt to answer a turn, speculative until committed.

Events of a speculative reply are held back; ``commit`` releases them and lets its audio play. A reply ends with
one typed :class:`Outcome`; ``DISCARDED`` (a speculation the user talked over) reports nothing to the client.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any

from services.gateway.playout import Playout
from stepaudio.conversation.v1 import conversation_pb2 as pb


class Outcome(enum.Enum):
    COMPLETED = pb.TURN_OUTCOME_COMPLETED
    INTERRUPTED = pb.TURN_OUTCOME_INTERRUPTED
    FAILED = pb.TURN_OUTCOME_FAILED
    DISCARDED = 0  # a speculative reply the user talked over: never reported


@dataclass
class Timings:
    """Durations of one turn, in ms; None where the turn did not get that far."""

    asr_ms: float | None = None  # final transcript after the end of speech (or the endpoint)
    tokenize_ms: float | None = None  # the utterance's last dual tokens after the end of speech (audio_tokens input)
    llm_first_token_ms: float | None = None  # LLM request to its first text token
    llm_total_ms: float | None = None  # LLM request(s) to the last token, tool rounds included
    tts_first_chunk_ms: float | None = None  # first text to TTS to its first audio
    time_to_first_audio_ms: float | None = None  # end of user speech to the first reply audio sent
    time_to_first_audible_ms: float | None = None  # ... to the first audible sample (the TTS's leading silence out)
    endpoint_ms: float | None = None  # end of user speech to the endpoint decision
    total_ms: float | None = None  # end of user speech to the end of the reply

    def items(self) -> Iterator[tuple[str, float]]:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                yield f.name, value


@dataclass
class ToolRecord:
    """One tool call of a reply, as logged."""

    call_id: str
    name: str
    arguments: str
    result: str
    error: str
    latency_ms: float


@dataclass
class Reply:
    """One reply attempt for a turn."""

    turn_id: str
    span: Any  # the turn's span: the reply's spans are its children, and the reply ends it
    speech_end_at: float  # loop time at which the user's speech ended (arrival of that audio)
    playout: Playout
    speculative: bool = False
    user_text: str = ""
    confidence: float = 0.0
    user_audio: bytes = b""
    user_tokens: list[int] = field(default_factory=list)  # the turn as dual tokens (llm_input=audio_tokens)
    transcribing: asyncio.Task | None = None  # the transcript, made beside the LLM call when it hears tokens
    heard: asyncio.Event = field(default_factory=asyncio.Event)  # set once user_text is final (or never will be)
    # set once the LLM has read the prompt (its first event), or the reply ended without getting there
    prompt_read: asyncio.Event = field(default_factory=asyncio.Event)
    text: str = ""
    tool_calls: list[ToolRecord] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)
    outcome: Outcome = Outcome.COMPLETED
    played_ms_at_cut: float | None = None  # what had been played when it was interrupted
    completion_tokens: int = 0
    discards: int = 0  # speculative replies discarded in this turn before this one
    wasted_ms: float = 0.0  # their compute time
    started_at: float = 0.0
    task: asyncio.Task | None = None
    committed: asyncio.Event = field(default_factory=asyncio.Event)
    settled: asyncio.Event = field(default_factory=asyncio.Event)  # committed or cancelled, whichever came first
    _held: list[pb.ConverseResponse] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def emit(self, event: pb.ConverseResponse, sink: Callable[[pb.ConverseResponse], None]) -> None:
        """Send an event of this reply: now if committed, else when it is."""
        if self.committed.is_set():
            sink(event)
        else:
            self._held.append(event)

    def commit(self, sink: Callable[[pb.ConverseResponse], None]) -> None:
        for event in self._held:
            sink(event)
        self._held.clear()
        self.committed.set()
        self.settled.set()
        self.playout.start()

    async def until_committed(self) -> None:
        """Wait for the commit. A reply cancelled first raises CancelledError here, so a reply whose task missed
        its cancellation (it can be lost in a race) never waits for a commit that cannot come."""
        await self.settled.wait()
        if not self.committed.is_set():
            raise asyncio.CancelledError(f"reply of turn {self.turn_id} was cancelled before its commit")

    def cancel(self, outcome: Outcome, played_ms: float | None = None) -> None:
        """Stop the reply's work (gRPC cancellation reaches LLM, TTS and tools); it ends with ``outcome``.
        An interruption keeps what was played: ``played_ms`` as the client reports it, else the playout's."""
        if outcome == Outcome.INTERRUPTED:
            self.played_ms_at_cut = self.playout.played_ms() if played_ms is None else float(played_ms)
        self.outcome = outcome
        self.settled.set()
        if not self.committed.is_set():
            self.heard.set()  # its transcript never will be final: nobody waits for it (a task cancelled unstarted)
            self.prompt_read.set()
        if self.task is not None:
            self.task.cancel()

    def spoken_text(self) -> str:
        """What the user heard of the reply: all of it, or the played part of an interrupted one."""
        if self.outcome == Outcome.INTERRUPTED:
            played = self.played_ms_at_cut if self.played_ms_at_cut is not None else self.playout.sent_ms
            return self.playout.played_text(played)
        return self.text.strip()
