"""Playout: reply audio leaves at real-time pace, so what was *played* is known when the user barges in.

A reply's audio is sent at most ``lead_ms`` ahead of playback. The playback clock starts with the first piece and
stops while the reply is held (a possible interruption); the client may re-anchor it with its own position.
Times are the event loop's clock (``loop.time()``), so a test loop with virtual time drives it exactly.
"""

from __future__ import annotations

import asyncio


class Playout:
    """The playback clock of one reply, and the text of what was played."""

    PIECE_S = 0.1  # audio goes out in 100 ms pieces, so a hold stops it within one piece

    def __init__(self, lead_ms: float) -> None:
        self.lead_s = lead_ms / 1000
        self.sent_ms = 0.0
        self.started_at = 0.0  # loop time of the first piece (0: nothing sent yet)
        self._held_since = 0.0
        self._held_total = 0.0
        self._playing = asyncio.Event()
        self.phrases: list[tuple[str, float, float]] = []  # (text, start ms, end ms) of each spoken phrase
        self.audio = bytearray()
        self.rate = 22050

    @staticmethod
    def now() -> float:
        return asyncio.get_running_loop().time()

    # ---- control ------------------------------------------------------------------------------------------

    def start(self) -> None:
        """The reply may play (it was committed)."""
        self._playing.set()

    def hold(self) -> None:
        if not self._held_since:
            self._held_since = self.now()
        self._playing.clear()

    def release(self) -> None:
        if self._held_since:
            self._held_total += self.now() - self._held_since
            self._held_since = 0.0
        self._playing.set()

    def reanchor(self, played_ms: float) -> None:
        """The client reports its playback position."""
        if self.started_at:
            self.started_at = self.now() - played_ms / 1000 - self._held_total

    # ---- reading ------------------------------------------------------------------------------------------

    def played_ms(self) -> float:
        if not self.started_at:
            return 0.0
        now = self.now()
        held = self._held_total + (now - self._held_since if self._held_since else 0.0)
        return max(0.0, min(self.sent_ms, (now - self.started_at - held) * 1000))

    def played_text(self, played_ms: float) -> str:
        """The reply text whose audio was played: whole phrases, plus the played share of the current one."""
        out = []
        for text, start, end in self.phrases:
            if end <= played_ms:
                out.append(text)
            elif start < played_ms:
                words = text.split()
                n = int(len(words) * (played_ms - start) / max(end - start, 1.0))
                if n:
                    out.append(" ".join(words[:n]))
                break
        return " ".join(out)

    # ---- pacing -------------------------------------------------------------------------------------------

    def pieces(self, data: bytes, rate: int) -> list[bytes]:
        step = max(int(rate * self.PIECE_S) * 2, 2)
        return [data[i:i + step] for i in range(0, len(data), step)]

    async def wait_slot(self) -> bool:
        """Wait until the next piece may go out (not held, at most ``lead`` ahead). True for the reply's first."""
        while True:
            await self._playing.wait()
            now = self.now()
            if not self.started_at:
                self.started_at = now
                return True
            ahead = self.sent_ms / 1000 - (now - self.started_at - self._held_total)
            if ahead <= self.lead_s:
                return False
            await asyncio.sleep(min(max(ahead - self.lead_s, 0.001), 0.05))

    def sent(self, piece: bytes, rate: int, phrase: str | None, phrase_bytes: int) -> float:
        """Account for a piece that went out; ``phrase`` is set on a phrase's first piece. Returns its offset."""
        offset = self.sent_ms
        if phrase is not None:
            self.phrases.append((phrase, offset, offset + phrase_bytes * 500.0 / rate))
        self.audio += piece
        self.rate = rate
        self.sent_ms += len(piece) * 500.0 / rate
        return offset
