"""The conversation history of a session: what the LLM is shown, and what is kept (bounded) across restarts."""

from __future__ import annotations

from services.gateway.store import StoredSession
from stepaudio.llm.v1 import llm_pb2

_ROLES = {"user": llm_pb2.ROLE_USER, "assistant": llm_pb2.ROLE_ASSISTANT}


class History:
    """Text history over a stored session; at most ``max_stored`` messages are kept (oldest dropped)."""

    def __init__(self, stored: StoredSession, max_stored: int) -> None:
        self.stored = stored
        self.max_stored = max_stored

    @property
    def messages_kept(self) -> list[dict[str, str]]:
        return self.stored.history

    def prompt(self, system: str, user: llm_pb2.ContentPart, max_messages: int) -> list[llm_pb2.ChatMessage]:
        """System prompt, the last ``max_messages`` of history (text), then the user's turn (text or audio tokens)."""
        msgs = [llm_pb2.ChatMessage(role=llm_pb2.ROLE_SYSTEM, content=[llm_pb2.ContentPart(text=system)])]
        recent = self.stored.history[-max_messages:] if max_messages > 0 else []
        for m in recent:
            msgs.append(llm_pb2.ChatMessage(role=_ROLES[m["role"]], content=[llm_pb2.ContentPart(text=m["text"])]))
        msgs.append(llm_pb2.ChatMessage(role=llm_pb2.ROLE_USER, content=[user]))
        return msgs

    def add_exchange(self, user_text: str, spoken: str) -> None:
        """A finished turn: the user's words and what the user heard of the reply."""
        self.stored.history.append({"role": "user", "text": user_text})
        if spoken:
            self.stored.history.append({"role": "assistant", "text": spoken})
        self._trim()

    def add_note(self, text: str) -> None:
        """An assistant-side note, e.g. a tool result that arrived after a barge-in."""
        self.stored.history.append({"role": "assistant", "text": text})
        self._trim()

    def last_user_text(self) -> str:
        return next((m["text"] for m in reversed(self.stored.history) if m["role"] == "user"), "")

    def drop_last_reply(self) -> str | None:
        """Remove the last exchange (to answer it again); returns its user text, None if there is none."""
        hist = self.stored.history
        if hist and hist[-1]["role"] == "assistant":
            hist.pop()
        if hist and hist[-1]["role"] == "user":
            return hist.pop()["text"]
        return None

    def _trim(self) -> None:
        extra = len(self.stored.history) - self.max_stored
        if extra > 0:
            del self.stored.history[:extra]

    @property
    def turns(self) -> int:
        return sum(1 for m in self.stored.history if m["role"] == "user")
