"""Load-time proof that a served Step1 model computes what the torch reference computes.

Step1's attention bias is ``-slope * sqrt(i - j)``; stock TensorRT-LLM ALiBi is linear. A converted engine with
the wrong bias still produces fluent-looking tokens, so a served model must prove itself before it goes READY:

1. When a checkpoint is converted (or a tiny store is made), the torch reference (:mod:`models.stepaudio.step1`)
   runs a fixed probe prompt and the logits at a few positions are stored next to the checkpoint as
   ``step1_probe.npz`` (:func:`write_probe`).
2. At load, the serving model (torch on Triton, or the TensorRT-LLM engine behind the BLS model) runs the same
   prompt and :func:`check` compares: the largest logit difference, in units of the reference logits' standard
   deviation, must stay under the tolerance and the arg-max token must agree at every probed position. Otherwise
   the model refuses to load and says why.

The probe prompt is long enough (``PROBE_LEN`` tokens) that a linear bias and a sqrt bias give clearly
different attention. ``python -m models.stepaudio.probe write CHECKPOINT_DIR`` writes the file.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.stepaudio.audio_tokens import AUDIO_VOCAB_OFFSET
from models.stepaudio.step1 import BOS_ID, BOT_ID

PROBE_FILE = "step1_probe.npz"
PROBE_LEN = 96
#: default tolerance: max |served - reference| / std(reference). fp32 vs fp32 is ~1e-5; bf16 engines ~0.05.
DEFAULT_TOLERANCE = 0.15


def probe_ids(vocab_size: int, length: int = PROBE_LEN, seed: int = 1234) -> list[int]:
    """A fixed prompt: BOS, BOT, then text-range and audio-range ids (seeded, so every side builds the same)."""
    rng = np.random.default_rng(seed)
    text_hi = min(vocab_size, AUDIO_VOCAB_OFFSET)
    ids = [BOS_ID, BOT_ID]
    while len(ids) < length:
        if vocab_size > AUDIO_VOCAB_OFFSET + 5120 and rng.random() < 0.5:
            ids.append(int(AUDIO_VOCAB_OFFSET + rng.integers(5120)))
        else:
            ids.append(int(rng.integers(5, text_hi)))
    return ids


def probe_positions(length: int = PROBE_LEN) -> list[int]:
    """Positions whose logits are compared: a few early ones and the far end, where the bias matters most."""
    return sorted({7, length // 4, length // 2, (3 * length) // 4, length - 1})


@dataclass(frozen=True)
class Probe:
    ids: list[int]
    positions: list[int]
    logits: np.ndarray  # (len(positions), vocab) float32

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        np.savez(p, ids=np.asarray(self.ids, np.int64), positions=np.asarray(self.positions, np.int64),
                 logits=self.logits.astype(np.float32))
        return p

    @classmethod
    def load(cls, path: str | Path) -> Probe:
        with np.load(Path(path)) as z:
            return cls([int(i) for i in z["ids"]], [int(i) for i in z["positions"]], z["logits"].astype(np.float32))


@dataclass(frozen=True)
class ProbeResult:
    max_diff: float  # max |served - reference| / std(reference)
    argmax_agree: bool
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.argmax_agree and self.max_diff <= self.tolerance

    def message(self, what: str) -> str:
        verdict = "matches" if self.ok else "does NOT match"
        hint = "" if self.ok else (
            " The served model is not Step1 as the reference computes it; the usual cause is an engine built with "
            "stock (linear) ALiBi instead of Step1's -slope*sqrt(i-j) bias, or wrong weights. See docs/TRITON.md."
        )
        return (f"{what} {verdict} the torch Step1 reference on the probe prompt: max logit difference "
                f"{self.max_diff:.4g} x std (tolerance {self.tolerance:g}), arg-max "
                f"{'agrees' if self.argmax_agree else 'differs'}.{hint}")


def reference_probe(model: object, length: int = PROBE_LEN) -> Probe:
    """Run the torch reference (a :class:`~models.stepaudio.step1.Step1ForCausalLM`) on the probe prompt."""
    import torch

    vocab = model.config.vocab_size  # type: ignore[attr-defined]
    ids = probe_ids(vocab, length)
    positions = probe_positions(length)
    device = model.lm_head.weight.device  # type: ignore[attr-defined]
    with torch.inference_mode():
        logits, _ = model(torch.tensor([ids], dtype=torch.long, device=device))  # type: ignore[operator]
    return Probe(ids, positions, logits[0, positions].float().cpu().numpy())


def write_probe(checkpoint_dir: str | Path, out: str | Path | None = None, device: str = "cpu") -> Path:
    """Load the checkpoint with the torch reference (fp32) and store its probe logits."""
    import torch

    from models.stepaudio.step1 import Step1ForCausalLM

    model = Step1ForCausalLM.from_pretrained(checkpoint_dir, device, dtype=torch.float32)
    return reference_probe(model).save(out or Path(checkpoint_dir) / PROBE_FILE)


def check(served_logits: Callable[[list[int]], np.ndarray], probe: Probe,
          tolerance: float = DEFAULT_TOLERANCE) -> ProbeResult:
    """Compare ``served_logits(ids) -> (len(ids), vocab)`` with the stored reference."""
    got = np.asarray(served_logits(probe.ids), np.float32)[probe.positions]
    ref = probe.logits
    if got.shape != ref.shape:
        return ProbeResult(float("inf"), False, tolerance)
    scale = float(ref.std()) + 1e-6
    diff = float(np.abs(got - ref).max()) / scale
    agree = bool((got.argmax(-1) == ref.argmax(-1)).all())
    return ProbeResult(diff, agree, tolerance)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.stepaudio.probe", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write", help="store the reference probe logits of a Step1 checkpoint")
    w.add_argument("checkpoint_dir")
    w.add_argument("--out", default=None, help=f"file to write (default CHECKPOINT_DIR/{PROBE_FILE})")
    w.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)
    print(write_probe(a.checkpoint_dir, a.out, a.device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
