"""The LLM backend interface: a templated prompt in, text deltas out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass

from services.llm.contract import GenerationParams


@dataclass
class GenerationChunk:
    """New text, or (``done``) the end with counts; the last chunk of every generation has ``done=True``."""

    text: str = ""
    done: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""  # stop | length | cancelled | "" (unknown)
    endpoint: str = ""


class LlmBackend(ABC):
    """Generates from a templated prompt."""

    @abstractmethod
    def generate(
        self, prompt: str, params: GenerationParams, model: str, request_id: str, timeout_s: float
    ) -> AsyncIterator[GenerationChunk]:
        """Stream the completion. Closing the iterator early cancels the generation on the server.

        Raises services.kit.errors.Unavailable when no endpoint can be reached, NotFound for an unknown model.
        """

    async def warmup(self, model: str, wait_s: float = 0.0) -> bool:
        """Check (optionally wait for) model readiness; True if ready somewhere. Never raises."""
        return True

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
