"""The text end-of-turn model on the real SmolLM2 GGUF: sentences cut at a hesitation score under the gateway's
threshold, finished requests over it."""

from __future__ import annotations

import pytest

from models.turn.text_turn import TextTurn, normalise
from services.gateway.settings import GatewaySettings

CUT = ["Please tell me", "I need a recipe for", "Can you convert", "My favourite number is", "I would like to know",
       "What is the weather", "What is twelve times", "My favorite numbers"]  # the last: Whisper at a cut "is"
FINISHED = ["What is the capital of France?", "Tell me a joke.", "What time is it?", "Hello.",
            "Can you convert ten miles to kilometres?", "What is the weather like in Paris today?",
            "I need a recipe for chocolate cake.", "How far away is the moon?"]


@pytest.fixture(scope="module")
def model() -> TextTurn:
    return TextTurn()


def test_normalise_drops_case_and_punctuation() -> None:
    assert normalise("  What's the TIME,  please?! ") == "what's the time please"


def test_cut_sentences_are_unfinished_and_finished_ones_are_not(model: TextTurn) -> None:
    threshold = GatewaySettings().end_of_turn_text_threshold
    # an ASR writes a full stop at a pause: the model must not read it as the end
    cut = {t: max(model.probability(t), model.probability(t + ".")) for t in CUT}
    finished = {t: model.probability(t) for t in FINISHED}
    assert all(p < threshold for p in cut.values()), cut
    assert all(p >= threshold for p in finished.values()), finished
    assert model.probability("") == 0.0
