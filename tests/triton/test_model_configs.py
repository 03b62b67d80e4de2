"""Every config.pbtxt in models/triton parses as Triton's ModelConfig and is internally consistent."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

REPO = Path(__file__).resolve().parents[2] / "models" / "triton"
CONFIGS = sorted(REPO.glob("*/config.pbtxt"))


def parse(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_there_are_configs() -> None:
    assert any(p.parent.name == "embedded_llm" for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.parent.name)
def test_config_parses(path: Path) -> None:
    cfg = parse(path)
    assert cfg.name == path.parent.name, "name must match the folder"
    assert cfg.backend or cfg.platform
    assert "${" not in path.read_text(), "unfilled template placeholder"
    names = [i.name for i in cfg.input] + [o.name for o in cfg.output]
    assert len(names) == len(set(names)), "duplicate tensor names"
    if cfg.backend == "python":
        assert (path.parent / "1" / "model.py").exists()


def test_llm_contract_matches_trtllm_names() -> None:
    """embedded_llm and the TensorRT-LLM BLS/ensemble models share the request contract."""
    embedded = parse(REPO / "embedded_llm" / "config.pbtxt")
    assert embedded.model_transaction_policy.decoupled
    inputs = {i.name: i for i in embedded.input}
    for name in (
        "text_input",
        "max_tokens",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "stop_words",
        "bad_words",
        "end_id",
        "pad_id",
        "repetition_penalty",
        "random_seed",
    ):
        assert name in inputs, name
    assert {o.name for o in embedded.output} >= {"text_output"}
    for other in ("step_audio_chat", "step_audio_tts"):
        for model in ("ensemble", "tensorrt_llm_bls"):
            path = REPO / other / model / "config.pbtxt"
            if not path.exists():
                continue
            cfg = parse(path)
            theirs = {i.name: i for i in cfg.input}
            for name, spec in inputs.items():
                if name in theirs:
                    assert theirs[name].data_type == spec.data_type, f"{other}/{model}: {name}"
            assert {"text_input", "max_tokens", "stream", "stop_words", "end_id"} <= set(theirs)
