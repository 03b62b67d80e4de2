"""Step1 loader (sharded safetensors), ALiBi-sqrt attention, KV cache, sampling and the repetition guard."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from models.stepaudio.step1 import (
    Step1Config,
    Step1ForCausalLM,
    alibi_slopes,
    apply_repetition_guard,
    sample_token,
    sqrt_alibi_bias,
)
from tests.models.conftest import make_step1

DATA = Path(__file__).parent / "data"
GOLDEN = [4745, 49435, 51732, 29337, 23205, 6314, 72197, 1213]


@pytest.fixture(scope="module")
def step1(tmp_path_factory: pytest.TempPathFactory) -> tuple[Step1ForCausalLM, Path]:
    d = tmp_path_factory.mktemp("Step-Audio-TTS-3B")
    make_step1(d)
    return Step1ForCausalLM.from_pretrained(d), d


def test_layout_and_load(step1: tuple[Step1ForCausalLM, Path]) -> None:
    model, d = step1
    index = json.loads((d / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1, "tiny model should still be sharded"
    names = set(index["weight_map"])
    assert "model.layers.0.self_attn.q_proj.weight" in names
    assert "model.layers.1.mlp.gate_proj.weight" in names
    assert "lm_head.weight" in names and "model.embed_tokens.weight" in names
    assert model.model.layers[0].self_attn.k_proj.weight.shape == (16, 48)  # 2 groups x head_dim 8
    assert model.lm_head.weight.dtype == torch.float32
    (d / "model-00001-of-00002.safetensors").exists()


def test_layout_matches_reference() -> None:
    """Names, shapes and order of the published Step-Audio-TTS-3B safetensors (list from make_reference_keys.py)."""
    with torch.device("meta"):
        m = Step1ForCausalLM(Step1Config())
    ref = json.loads((DATA / "step1_tts3b_state_keys.json").read_text())
    assert [[k, list(v.shape)] for k, v in m.state_dict().items()] == ref


def test_missing_shard_is_named(tmp_path: Path) -> None:
    make_step1(tmp_path)
    shard = sorted(tmp_path.glob("model-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=shard.name):
        Step1ForCausalLM.from_pretrained(tmp_path)


def test_alibi() -> None:
    s8 = alibi_slopes(8)
    assert torch.allclose(s8, torch.tensor([2.0 ** -(i + 1) for i in range(8)]))
    s6 = alibi_slopes(6)
    assert torch.allclose(s6[:4], torch.tensor([2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8]))
    assert torch.allclose(s6[4:], torch.tensor([2.0**-1, 2.0**-3]))
    b = sqrt_alibi_bias(s8, 4, 4)
    assert b[0, 3, 0] == pytest.approx(-0.5 * math.sqrt(3))
    assert b[0, 0, 1] == float("-inf") and b[0, 2, 2] == 0


def test_kv_cache_matches_full(step1: tuple[Step1ForCausalLM, Path]) -> None:
    model, _ = step1
    ids = torch.tensor([[1, 4, 100, 65536, 70000, 3, 4, 200, 66000]])
    full, _ = model(ids)
    part, past = model(ids[:, :5])
    rest, _ = model(ids[:, 5:], past)
    assert torch.allclose(torch.cat([part, rest], 1), full, atol=1e-5)


def test_generate_greedy_golden(step1: tuple[Step1ForCausalLM, Path]) -> None:
    model, _ = step1
    out = model.generate([1, 4, 10, 20, 3, 4], max_new_tokens=8, temperature=0.0, eos_token_id=3)
    assert out == GOLDEN


def test_generate_sampling_reproducible(step1: tuple[Step1ForCausalLM, Path]) -> None:
    model, _ = step1
    kw = dict(max_new_tokens=6, temperature=0.7, top_p=0.9, repetition_guard=True)
    a = model.generate([1, 4, 10], generator=torch.Generator().manual_seed(3), **kw)
    b = model.generate([1, 4, 10], generator=torch.Generator().manual_seed(3), **kw)
    assert a == b and len(a) == 6
    assert len(model.generate([1, 4, 10], max_length=5, temperature=0.0)) == 2


def test_repetition_guard() -> None:
    scores = torch.zeros(10)
    assert torch.equal(apply_repetition_guard(scores, [1, 2, 3]), scores)  # fewer than 10 tokens: no-op
    hist = [5, 1, 2, 3, 4, 6, 7, 8, 9, 5]
    assert apply_repetition_guard(scores, hist)[5] == float("-inf")
    hist2 = [0, 1, 2, 3, 4, 6, 7, 8, 9, 5]
    assert apply_repetition_guard(scores, hist2)[5] == 0
    s = torch.full((10,), -1e9)
    s[7] = 0.0
    assert sample_token(s, 0.7, 0.9, torch.Generator().manual_seed(0)) == 7


def test_top_k_keeps_only_the_k_best_tokens() -> None:
    s = torch.tensor([0.0, 5.0, 4.9, 4.8, -1.0])
    g = torch.Generator().manual_seed(0)
    picks = {sample_token(s, 10.0, 1.0, g, top_k=2) for _ in range(200)}
    assert picks == {1, 2}  # a hot temperature would reach every token without top-k
    assert {sample_token(s, 10.0, 1.0, g) for _ in range(200)} == {0, 1, 2, 3, 4}
