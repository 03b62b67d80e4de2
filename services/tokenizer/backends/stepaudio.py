"""Step-Audio dual tokenizer (Paraformer linguistic 16.7 Hz + CosyVoice semantic 25 Hz, 2:3 interleave).

``model_dir`` is the ``Step-Audio-Tokenizer`` dir or the models root holding it (``stepaudio models fetch``
layout). Every file the manifest lists for the tokenizer is checked at start; a missing one fails the start
with its path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from services.tokenizer.backends.base import DualTokenizerBackend, DualTokenStream
from services.tokenizer.settings import TokenizerSettings

TOKENIZER_DIR = "Step-Audio-Tokenizer"
ENV = "STEPAUDIO_TOKENIZER_MODEL_DIR"


def models_root(model_dir: str | Path, local_dir: str) -> Path:
    """The models root for a dir that is either the root or its ``local_dir`` child."""
    d = Path(model_dir)
    return d.parent if d.name == local_dir and not (d / local_dir).is_dir() else d


class _Stream(DualTokenStream):
    def __init__(self, stream: object) -> None:
        self.stream = stream

    def push(self, samples: np.ndarray, last: bool = False) -> list[int]:
        out: list[int] = []
        if samples.size:
            out += self.stream.feed(samples)  # type: ignore[attr-defined]
        if last:
            out += self.stream.finish()  # type: ignore[attr-defined]
        return out

    def final(self) -> list[int]:
        return list(self.stream.final_tokens())  # type: ignore[attr-defined]


class StepAudioDualTokenizer(DualTokenizerBackend):
    """Streams per session (``new_stream``): each keeps its own audio buffer and linguistic look-back."""

    def __init__(self, settings: TokenizerSettings) -> None:
        import torch

        from models.stepaudio import store
        from models.stepaudio.tokenizer import DualTokenizer

        if not settings.model_dir:
            raise ValueError(f"{ENV} is empty: set it to the Step-Audio-Tokenizer dir (or the models root)")
        root = models_root(settings.model_dir, TOKENIZER_DIR)
        problems = store.verify(root, service="tokenizer")
        if problems:
            raise FileNotFoundError(
                f"tokenizer: {len(problems)} model file(s) missing ({ENV}={settings.model_dir}):\n  "
                + "\n  ".join(problems)
                + f"\nfetch them with `stepaudio models fetch {root} --service tokenizer`; "
                f"check with `stepaudio models verify {root} --service tokenizer`"
            )
        torch.set_num_threads(max(1, settings.model_threads))
        self.model_dir = root / TOKENIZER_DIR
        self.tokenizer = DualTokenizer.load(self.model_dir)

    def new_stream(self) -> DualTokenStream:
        return _Stream(self.tokenizer.stream(self.sample_rate))
