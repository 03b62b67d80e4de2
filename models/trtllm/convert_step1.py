"""Convert a Step1 Hugging Face checkpoint (Step-Audio-Chat 130B, Step-Audio-TTS-3B) to a TensorRT-LLM checkpoint.

Input (the released layout): ``config.json`` (hidden_size, intermediate_size, num_attention_heads,
num_attention_groups, num_hidden_layers, vocab_size, max_seq_len, rms_norm_eps) and sharded safetensors with a
``model.safetensors.index.json`` (or one ``model.safetensors``). Parameter names::

    model.embed_tokens.weight                          [V, D]
    model.layers.{i}.input_layernorm.weight            [D]
    model.layers.{i}.self_attn.q_proj.weight           [H*d, D]
    model.layers.{i}.self_attn.k_proj.weight           [G*d, D]     (G = num_attention_groups, GQA)
    model.layers.{i}.self_attn.v_proj.weight           [G*d, D]
    model.layers.{i}.self_attn.o_proj.weight           [D, H*d]
    model.layers.{i}.post_attention_layernorm.weight   [D]
    model.layers.{i}.mlp.gate_proj.weight              [F, D]
    model.layers.{i}.mlp.up_proj.weight                [F, D]
    model.layers.{i}.mlp.down_proj.weight              [D, F]
    model.norm.weight                                  [D]
    lm_head.weight                                     [V, D]       (absent when tied: the embedding is used)

Output: ``config.json`` + ``rank{r}.safetensors`` for r in 0..tp-1 with TensorRT-LLM's decoder names::

    transformer.vocab_embedding.weight      vocab-parallel: rows split (vocab padded to a multiple of tp)
    transformer.layers.{i}.input_layernorm.weight, post_layernorm.weight      replicated
    transformer.layers.{i}.attention.qkv.weight   column-parallel: [q heads of rank r; k groups; v groups]
                                             (groups replicated when tp > G: rank r uses group r*G//tp)
    transformer.layers.{i}.attention.dense.weight row-parallel: columns split
    transformer.layers.{i}.mlp.fc.weight (gate_proj, gets the SiLU), mlp.gate.weight (up_proj): column-parallel
    transformer.layers.{i}.mlp.proj.weight  row-parallel (down_proj)
    transformer.ln_f.weight                 replicated
    lm_head.weight                          vocab-parallel rows (padded)

Step1 uses ALiBi with a square-root distance bias (-slope * sqrt(i - j)) and no RoPE. The checkpoint records
``position_embedding_type: "alibi"`` and ``step1.alibi_bias: "sqrt"``: stock TensorRT-LLM applies the linear ALiBi
bias, so the engine needs the sqrt-bias attention (see docs/TRITON.md) to reproduce the reference outputs.

    python -m models.trtllm.convert_step1 --model-dir /models/Step-Audio-Chat --output-dir /ckpt/chat-tp4 --tp-size 4
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass(frozen=True)
class Step1Config:
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_groups: int
    num_layers: int
    vocab_size: int
    max_seq_len: int
    rms_norm_eps: float
    bos_token_id: int = 1
    eos_token_id: int = 3
    pad_token_id: int = 0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> Step1Config:
        heads = cfg["num_attention_heads"]
        return cls(
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_heads=heads,
            num_groups=cfg.get("num_attention_groups") or cfg.get("num_key_value_heads") or heads,
            num_layers=cfg["num_hidden_layers"],
            vocab_size=cfg["vocab_size"],
            max_seq_len=cfg.get("max_seq_len") or cfg.get("max_position_embeddings") or 32768,
            rms_norm_eps=cfg.get("rms_norm_eps", 1e-5),
            bos_token_id=cfg.get("bos_token_id", 1),
            eos_token_id=cfg.get("eos_token_id", 3),
            pad_token_id=cfg.get("pad_token_id", 0),
        )


class CheckpointReader:
    """Lazy access to the tensors of a (sharded) safetensors checkpoint."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        index = model_dir / "model.safetensors.index.json"
        if index.exists():
            weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        else:
            files = sorted(model_dir.glob("*.safetensors"))
            if not files:
                raise FileNotFoundError(f"no model.safetensors.index.json or *.safetensors in {model_dir}")
            weight_map = {}
            for f in files:
                with safe_open(str(f), framework="pt") as h:
                    weight_map.update(dict.fromkeys(h.keys(), f.name))
        self.weight_map = weight_map
        self._stack = ExitStack()
        self._handles: dict[str, Any] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.weight_map

    def get(self, name: str) -> torch.Tensor:
        if name not in self.weight_map:
            raise KeyError(f"tensor {name!r} not in the checkpoint ({self.model_dir})")
        fname = self.weight_map[name]
        if fname not in self._handles:
            self._handles[fname] = self._stack.enter_context(safe_open(str(self.model_dir / fname), framework="pt"))
        return self._handles[fname].get_tensor(name)

    def close(self) -> None:
        self._stack.close()


def split_rows(w: torch.Tensor, tp: int, rank: int) -> torch.Tensor:
    if w.shape[0] % tp:
        raise ValueError(f"dim 0 of shape {tuple(w.shape)} is not divisible by tp={tp}")
    n = w.shape[0] // tp
    return w[rank * n : (rank + 1) * n]


def split_cols(w: torch.Tensor, tp: int, rank: int) -> torch.Tensor:
    if w.shape[1] % tp:
        raise ValueError(f"dim 1 of shape {tuple(w.shape)} is not divisible by tp={tp}")
    n = w.shape[1] // tp
    return w[:, rank * n : (rank + 1) * n]


def pad_vocab(w: torch.Tensor, tp: int) -> torch.Tensor:
    pad = (-w.shape[0]) % tp
    if pad == 0:
        return w
    return torch.cat([w, torch.zeros(pad, *w.shape[1:], dtype=w.dtype)], dim=0)


def qkv_shard(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cfg: Step1Config, tp: int, rank: int) -> torch.Tensor:
    """Rank r's fused qkv rows: its H/tp query heads, then its key/value groups (replicated when tp > G)."""
    d = cfg.head_dim
    q_r = split_rows(q, tp, rank)
    if tp <= cfg.num_groups:
        k_r, v_r = split_rows(k, tp, rank), split_rows(v, tp, rank)
    else:
        if tp % cfg.num_groups:
            raise ValueError(f"tp={tp} must be a multiple of num_attention_groups={cfg.num_groups}")
        g = rank * cfg.num_groups // tp
        k_r, v_r = k[g * d : (g + 1) * d], v[g * d : (g + 1) * d]
    return torch.cat([q_r, k_r, v_r], dim=0)


def validate(cfg: Step1Config, tp: int) -> None:
    problems = []
    if cfg.hidden_size % cfg.num_heads:
        problems.append(f"hidden_size {cfg.hidden_size} not divisible by num_attention_heads {cfg.num_heads}")
    if cfg.num_heads % tp:
        problems.append(f"num_attention_heads {cfg.num_heads} not divisible by tp {tp}")
    if cfg.num_heads % cfg.num_groups:
        problems.append(f"num_attention_heads {cfg.num_heads} not divisible by groups {cfg.num_groups}")
    if not (cfg.num_groups % tp == 0 or tp % cfg.num_groups == 0):
        problems.append(f"num_attention_groups {cfg.num_groups} and tp {tp}: one must divide the other")
    if cfg.intermediate_size % tp:
        problems.append(f"intermediate_size {cfg.intermediate_size} not divisible by tp {tp}")
    if problems:
        raise ValueError("cannot shard this checkpoint: " + "; ".join(problems))


def trtllm_config(cfg: Step1Config, tp: int, dtype: str, source: str) -> dict[str, Any]:
    return {
        "architecture": "LlamaForCausalLM",
        "dtype": dtype,
        "logits_dtype": "float32",
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_groups,
        "head_size": cfg.head_dim,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_seq_len,
        "hidden_act": "silu",
        "norm_epsilon": cfg.rms_norm_eps,
        "position_embedding_type": "alibi",
        "use_parallel_embedding": tp > 1,
        "embedding_sharding_dim": 0,
        "share_embedding_table": False,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "pad_token_id": cfg.pad_token_id,
        "mapping": {"world_size": tp, "tp_size": tp, "pp_size": 1},
        "quantization": {"quant_algo": None, "kv_cache_quant_algo": None},
        "step1": {
            "alibi_bias": "sqrt",
            "source": source,
            "vocab_size_padded": cfg.vocab_size + (-cfg.vocab_size) % tp,
            "audio_token_offset": 65536,
        },
    }


def rank_weights(
    reader: CheckpointReader, cfg: Step1Config, tp: int, rank: int, dtype: torch.dtype
) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs of rank `rank`, converted to `dtype`."""

    def t(name: str) -> torch.Tensor:
        return reader.get(name).to(dtype)

    emb = t("model.embed_tokens.weight")
    yield "transformer.vocab_embedding.weight", split_rows(pad_vocab(emb, tp), tp, rank) if tp > 1 else emb
    for i in range(cfg.num_layers):
        p, o = f"model.layers.{i}.", f"transformer.layers.{i}."
        yield o + "input_layernorm.weight", t(p + "input_layernorm.weight")
        q, k, v = t(p + "self_attn.q_proj.weight"), t(p + "self_attn.k_proj.weight"), t(p + "self_attn.v_proj.weight")
        yield o + "attention.qkv.weight", qkv_shard(q, k, v, cfg, tp, rank)
        yield o + "attention.dense.weight", split_cols(t(p + "self_attn.o_proj.weight"), tp, rank)
        yield o + "post_layernorm.weight", t(p + "post_attention_layernorm.weight")
        yield o + "mlp.fc.weight", split_rows(t(p + "mlp.gate_proj.weight"), tp, rank)
        yield o + "mlp.gate.weight", split_rows(t(p + "mlp.up_proj.weight"), tp, rank)
        yield o + "mlp.proj.weight", split_cols(t(p + "mlp.down_proj.weight"), tp, rank)
    yield "transformer.ln_f.weight", t("model.norm.weight")
    head = t("lm_head.weight") if "lm_head.weight" in reader else emb
    yield "lm_head.weight", split_rows(pad_vocab(head, tp), tp, rank)


def convert(model_dir: Path | str, output_dir: Path | str, tp_size: int = 1, dtype: str = "bfloat16") -> Path:
    """Write the TensorRT-LLM checkpoint; returns output_dir."""
    model_dir, output_dir = Path(model_dir), Path(output_dir)
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: use one of {sorted(DTYPES)}")
    hf = json.loads((model_dir / "config.json").read_text())
    cfg = Step1Config.from_hf(hf)
    validate(cfg, tp_size)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.json").write_text(json.dumps(trtllm_config(cfg, tp_size, dtype, str(model_dir)), indent=2))
    reader = CheckpointReader(model_dir)
    try:
        for rank in range(tp_size):
            tensors = {n: w.contiguous().clone() for n, w in rank_weights(reader, cfg, tp_size, rank, DTYPES[dtype])}
            save_file(tensors, str(output_dir / f"rank{rank}.safetensors"), metadata={"rank": str(rank)})
            del tensors
    finally:
        reader.close()
    return output_dir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Step1 HF checkpoint -> TensorRT-LLM checkpoint (tensor parallel).")
    ap.add_argument("--model-dir", required=True, help="HF checkpoint folder (config.json + safetensors)")
    ap.add_argument("--output-dir", required=True)
    ap.add_argument("--tp-size", type=int, default=1, help="tensor-parallel size (Chat: 4 or 8; TTS-3B: 1)")
    ap.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    a = ap.parse_args(argv)
    out = convert(a.model_dir, a.output_dir, a.tp_size, a.dtype)
    print(f"wrote {out}/config.json and rank0..{a.tp_size - 1}.safetensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
