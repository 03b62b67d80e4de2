"""Step1 HF -> TensorRT-LLM checkpoint converter on a tiny random Step1 checkpoint (TP 1, 2, 4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from models.trtllm.convert_step1 import convert, main

# Tiny Step1: 4 heads, 2 KV groups (GQA), head_dim 8; vocab 130 is not a multiple of 4 (padding path);
# TP=4 > groups (KV replication path).
CFG = {
    "architectures": ["Step1ForCausalLM"],
    "model_type": "step1",
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_attention_heads": 4,
    "num_attention_groups": 2,
    "num_hidden_layers": 2,
    "vocab_size": 130,
    "max_seq_len": 256,
    "rms_norm_eps": 1e-5,
}
H, G, D, F, V, L = 4, 2, 32, 48, 130, 2
HD = D // H


def make_step1(path: Path, tied: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g).to(torch.bfloat16)  # noqa: E731
    w = {"model.embed_tokens.weight": r(V, D), "model.norm.weight": r(D)}
    if not tied:
        w["lm_head.weight"] = r(V, D)
    for i in range(L):
        p = f"model.layers.{i}."
        w |= {
            p + "input_layernorm.weight": r(D),
            p + "post_attention_layernorm.weight": r(D),
            p + "self_attn.q_proj.weight": r(H * HD, D),
            p + "self_attn.k_proj.weight": r(G * HD, D),
            p + "self_attn.v_proj.weight": r(G * HD, D),
            p + "self_attn.o_proj.weight": r(D, H * HD),
            p + "mlp.gate_proj.weight": r(F, D),
            p + "mlp.up_proj.weight": r(F, D),
            p + "mlp.down_proj.weight": r(D, F),
        }
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(CFG))
    names = sorted(w)
    shards = [names[: len(names) // 2], names[len(names) // 2 :]]  # sharded like the release
    index = {"metadata": {}, "weight_map": {}}
    for k, part in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-00002.safetensors"
        save_file({n: w[n] for n in part}, str(path / fname))
        index["weight_map"] |= dict.fromkeys(part, fname)
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    return w


def load_rank(out: Path, r: int) -> dict[str, torch.Tensor]:
    with safe_open(str(out / f"rank{r}.safetensors"), framework="pt") as h:
        return {k: h.get_tensor(k) for k in h.keys()}


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_convert_shapes_sharding_and_round_trip(tmp_path: Path, tp: int) -> None:
    w = make_step1(tmp_path / "hf")
    out = convert(tmp_path / "hf", tmp_path / f"trt-tp{tp}", tp_size=tp)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["mapping"] == {"world_size": tp, "tp_size": tp, "pp_size": 1}
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_size"]) == (H, G, HD)
    assert cfg["position_embedding_type"] == "alibi" and cfg["step1"]["alibi_bias"] == "sqrt"
    ranks = [load_rank(out, r) for r in range(tp)]
    vpad = V + (-V) % tp
    kv_per_rank = max(1, G // tp)
    for rw in ranks:
        assert rw["transformer.layers.0.attention.qkv.weight"].shape == ((H // tp + 2 * kv_per_rank) * HD, D)
        assert rw["transformer.layers.0.attention.dense.weight"].shape == (D, H * HD // tp)
        assert rw["transformer.layers.0.mlp.fc.weight"].shape == (F // tp, D)
        assert rw["transformer.layers.0.mlp.gate.weight"].shape == (F // tp, D)
        assert rw["transformer.layers.0.mlp.proj.weight"].shape == (D, F // tp)
        assert rw["lm_head.weight"].shape == (vpad // tp, D)
        assert rw["transformer.vocab_embedding.weight"].shape == ((vpad // tp if tp > 1 else V), D)
        assert rw["transformer.ln_f.weight"].dtype == torch.bfloat16
        assert len(rw) == 3 + 7 * L

    def cat(name: str, dim: int) -> torch.Tensor:
        return torch.cat([rw[name] for rw in ranks], dim=dim)

    # Round trip: concatenating the shards gives back the original tensors.
    assert torch.equal(cat("lm_head.weight", 0)[:V], w["lm_head.weight"])
    assert torch.all(cat("lm_head.weight", 0)[V:] == 0)
    assert torch.equal(cat("transformer.vocab_embedding.weight", 0)[:V], w["model.embed_tokens.weight"])
    for i in range(L):
        p, o = f"model.layers.{i}.", f"transformer.layers.{i}."
        assert torch.equal(cat(o + "attention.dense.weight", 1), w[p + "self_attn.o_proj.weight"])
        assert torch.equal(cat(o + "mlp.fc.weight", 0), w[p + "mlp.gate_proj.weight"])
        assert torch.equal(cat(o + "mlp.gate.weight", 0), w[p + "mlp.up_proj.weight"])
        assert torch.equal(cat(o + "mlp.proj.weight", 1), w[p + "mlp.down_proj.weight"])
        for rw in ranks:
            assert torch.equal(rw[o + "input_layernorm.weight"], w[p + "input_layernorm.weight"])
        qs, ks, vs = [], [], []
        for rw in ranks:
            q_r, k_r, v_r = rw[o + "attention.qkv.weight"].split([H // tp * HD, kv_per_rank * HD, kv_per_rank * HD])
            qs.append(q_r)
            ks.append(k_r)
            vs.append(v_r)
        assert torch.equal(torch.cat(qs), w[p + "self_attn.q_proj.weight"])
        if tp <= G:
            assert torch.equal(torch.cat(ks), w[p + "self_attn.k_proj.weight"])
            assert torch.equal(torch.cat(vs), w[p + "self_attn.v_proj.weight"])
        else:  # groups replicated: rank r holds group r*G//tp; the distinct groups in order give K and V back
            unique_k = [ks[r] for r in range(0, tp, tp // G)]
            unique_v = [vs[r] for r in range(0, tp, tp // G)]
            assert torch.equal(torch.cat(unique_k), w[p + "self_attn.k_proj.weight"])
            assert torch.equal(torch.cat(unique_v), w[p + "self_attn.v_proj.weight"])
            for r in range(tp):  # each rank's query heads belong to the group it holds
                g = r * G // tp
                assert (r * (H // tp)) // (H // G) == g


def test_tied_lm_head_and_cli(tmp_path: Path) -> None:
    w = make_step1(tmp_path / "hf", tied=True)
    assert (
        main(
            [
                "--model-dir",
                str(tmp_path / "hf"),
                "--output-dir",
                str(tmp_path / "o"),
                "--tp-size",
                "2",
                "--dtype",
                "float16",
            ]
        )
        == 0
    )
    r0, r1 = load_rank(tmp_path / "o", 0), load_rank(tmp_path / "o", 1)
    head = torch.cat([r0["lm_head.weight"], r1["lm_head.weight"]])[:V]
    assert head.dtype == torch.float16
    assert torch.equal(head, w["model.embed_tokens.weight"].to(torch.float16))


def test_unshardable_is_rejected(tmp_path: Path) -> None:
    make_step1(tmp_path / "hf")
    with pytest.raises(ValueError, match="not divisible by tp 3"):
        convert(tmp_path / "hf", tmp_path / "o", tp_size=3)
