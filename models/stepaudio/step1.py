"""Step1 decoder (Step-Audio-Chat / Step-Audio-TTS-3B) in plain torch.

Architecture: decoder-only, pre-RMSNorm, grouped-query attention (``num_attention_groups`` KV heads), no RoPE;
positions enter only through an ALiBi-style bias ``-slope_h * sqrt(i - j)`` (causal), gated SiLU MLP, untied
``lm_head``. Parameter names follow the published checkpoints::

    model.embed_tokens.weight
    model.layers.{i}.input_layernorm.weight
    model.layers.{i}.self_attn.{q,k,v,o}_proj.weight
    model.layers.{i}.post_attention_layernorm.weight
    model.layers.{i}.mlp.{gate,up,down}_proj.weight
    model.norm.weight
    lm_head.weight

Weights load from ``config.json`` plus either ``model.safetensors`` or sharded safetensors listed in
``model.safetensors.index.json``. fp32 on CPU, bf16 on CUDA by default.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

BOS_ID = 1
EOT_ID = 3
BOT_ID = 4


@dataclass
class Step1Config:
    """Subset of the published ``config.json`` the model needs."""

    hidden_size: int = 3072
    intermediate_size: int = 8192
    num_attention_heads: int = 48
    num_attention_groups: int = 4
    num_hidden_layers: int = 32
    vocab_size: int = 74752
    max_seq_len: int = 32768
    rms_norm_eps: float = 1e-5
    extra: dict = field(default_factory=dict)

    @property
    def head_dim(self) -> int:
        """Per-head dimension (hidden / heads)."""
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, d: dict) -> Step1Config:
        """Build from a parsed config.json (unknown keys kept in ``extra``)."""
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d and k != "extra"}
        extra = {k: v for k, v in d.items() if k not in known}
        return cls(**known, extra=extra)

    @classmethod
    def from_file(cls, path: str | Path) -> Step1Config:
        """Read ``config.json``."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def to_dict(self) -> dict:
        """Serialise in the published key names."""
        d = dict(self.extra)
        d.update(
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_attention_heads=self.num_attention_heads,
            num_attention_groups=self.num_attention_groups,
            num_hidden_layers=self.num_hidden_layers,
            vocab_size=self.vocab_size,
            max_seq_len=self.max_seq_len,
            rms_norm_eps=self.rms_norm_eps,
        )
        d.setdefault("model_type", "step1")
        d.setdefault("architectures", ["Step1ForCausalLM"])
        return d


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """Standard ALiBi head slopes (geometric; extra heads interleaved for non powers of two)."""
    closest = 2 ** math.floor(math.log2(n_heads))
    slopes = [2.0 ** (-8.0 * (h + 1) / closest) for h in range(closest)]
    extra = n_heads - closest
    slopes += [2.0 ** (-4.0 * (2 * h + 1) / closest) for h in range(extra)]
    return torch.tensor(slopes, dtype=torch.float32)


ALIBI_BIASES = ("sqrt", "linear")


def sqrt_alibi_bias(
    slopes: torch.Tensor, q_len: int, kv_len: int, device: torch.device | None = None, kind: str = "sqrt"
) -> torch.Tensor:
    """Bias (heads, q_len, kv_len): ``-slope * sqrt(i - j)`` for j <= i, ``-inf`` above the diagonal.

    Query i sits at absolute position ``kv_len - q_len + i`` (the KV cache precedes it). ``kind="linear"`` gives
    the classic ALiBi ``-slope * (i - j)`` that stock TensorRT-LLM computes: wrong for Step1, kept only so the
    load-time probe (:mod:`models.stepaudio.probe`) can be shown to refuse it.
    """
    if kind not in ALIBI_BIASES:
        raise ValueError(f"alibi bias {kind!r}: use one of {ALIBI_BIASES}")
    qpos = torch.arange(kv_len - q_len, kv_len, device=device, dtype=torch.float32)[:, None]
    kpos = torch.arange(kv_len, device=device, dtype=torch.float32)[None, :]
    dist = qpos - kpos
    dist_pos = dist.clamp(min=0)
    bias = -slopes.to(device)[:, None, None] * (dist_pos.sqrt() if kind == "sqrt" else dist_pos)[None]
    return bias.masked_fill((dist < 0)[None], float("-inf"))


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in fp32."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise the last dimension."""
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).to(x.dtype)


KVCache = list[tuple[torch.Tensor, torch.Tensor]]


class StepAttention(nn.Module):
    """GQA self-attention with the sqrt-distance ALiBi bias."""

    def __init__(self, cfg: Step1Config) -> None:
        super().__init__()
        self.n_heads = cfg.num_attention_heads
        self.n_groups = cfg.num_attention_groups
        self.head_dim = cfg.head_dim
        h = cfg.hidden_size
        self.q_proj = nn.Linear(h, h, bias=False)
        self.k_proj = nn.Linear(h, self.n_groups * self.head_dim, bias=False)
        self.v_proj = nn.Linear(h, self.n_groups * self.head_dim, bias=False)
        self.o_proj = nn.Linear(h, h, bias=False)

    def forward(
        self, x: torch.Tensor, bias: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x: (B, T, H); bias: (heads, T, past+T). Returns output and the updated (k, v) cache."""
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.n_groups, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_groups, self.head_dim).transpose(1, 2)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        rep = self.n_heads // self.n_groups
        kk = k.repeat_interleave(rep, dim=1)
        vv = v.repeat_interleave(rep, dim=1)
        out = F.scaled_dot_product_attention(q, kk, vv, attn_mask=bias.to(q.dtype)[None])
        out = out.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim)
        return self.o_proj(out), (k, v)


class StepMLP(nn.Module):
    """Gated SiLU feed-forward."""

    def __init__(self, cfg: Step1Config) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """down(silu(gate(x)) * up(x))."""
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class StepLayer(nn.Module):
    """Pre-norm decoder layer."""

    def __init__(self, cfg: Step1Config) -> None:
        super().__init__()
        # Registration order of the reference StepLayer (self_attn, mlp, then the two norms).
        self.self_attn = StepAttention(cfg)
        self.mlp = StepMLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(
        self, x: torch.Tensor, bias: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Attention and MLP with residuals."""
        a, kv = self.self_attn(self.input_layernorm(x), bias, past)
        x = x + a
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, kv


class Step1Model(nn.Module):
    """Embedding + layers + final norm (``model.*`` in the checkpoint)."""

    def __init__(self, cfg: Step1Config) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([StepLayer(cfg) for _ in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class Step1ForCausalLM(nn.Module):
    """Step1 causal LM with KV-cached incremental decoding."""

    def __init__(self, cfg: Step1Config) -> None:
        super().__init__()
        self.config = cfg
        self.model = Step1Model(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.register_buffer("slopes", alibi_slopes(cfg.num_attention_heads), persistent=False)
        self.alibi_bias = "sqrt"  # Step1's bias; "linear" only to test the probe guard

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
    ) -> Step1ForCausalLM:
        """Load ``config.json`` + safetensors (sharded via ``model.safetensors.index.json`` or single file).

        dtype defaults to fp32 on CPU and bf16 on CUDA. Raises FileNotFoundError naming a missing file and
        ValueError listing missing/unexpected parameter names.
        """
        from safetensors.torch import load_file

        root = Path(path)
        cfg_path = root / "config.json"
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{cfg_path} is missing")
        cfg = Step1Config.from_file(cfg_path)
        device = torch.device(device)
        if dtype is None:
            dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        index = root / "model.safetensors.index.json"
        if index.is_file():
            weight_map: dict[str, str] = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            shards = sorted(set(weight_map.values()))
        elif (root / "model.safetensors").is_file():
            shards = ["model.safetensors"]
            weight_map = {}
        else:
            raise FileNotFoundError(f"neither {index} nor {root / 'model.safetensors'} exists")
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            f = root / shard
            if not f.is_file():
                raise FileNotFoundError(f"shard {f} listed in the index is missing")
            for k, v in load_file(str(f), device="cpu").items():
                state[k] = v.to(dtype)
        if weight_map:
            absent = sorted(set(weight_map) - set(state))
            if absent:
                raise ValueError(f"tensors listed in the index but absent from shards: {absent[:5]}")
        with torch.device("meta"):
            model = cls(cfg)
        expected = set(model.state_dict())
        missing = sorted(expected - set(state))
        unexpected = sorted(set(state) - expected)
        if missing or unexpected:
            raise ValueError(f"checkpoint mismatch: missing {missing[:8]}, unexpected {unexpected[:8]}")
        model.load_state_dict(state, assign=True)
        model.slopes = alibi_slopes(cfg.num_attention_heads)
        return model.to(device).eval()

    # ------------------------------------------------------------------ forward
    def forward(self, input_ids: torch.Tensor, past: KVCache | None = None) -> tuple[torch.Tensor, KVCache]:
        """input_ids (B, T) -> logits (B, T, V) in fp32 and the new KV cache."""
        t = input_ids.shape[1]
        past_len = 0 if not past else past[0][0].shape[2]
        bias = sqrt_alibi_bias(self.slopes, t, past_len + t, device=input_ids.device, kind=self.alibi_bias)
        x = self.model.embed_tokens(input_ids)
        new: KVCache = []
        for i, layer in enumerate(self.model.layers):
            x, kv = layer(x, bias, past[i] if past else None)
            new.append(kv)
        x = self.model.norm(x)
        return self.lm_head(x).float(), new

    # ------------------------------------------------------------------ sampling
    @torch.inference_mode()
    def generate_stream(
        self,
        prompt_ids: Sequence[int],
        max_new_tokens: int = 2048,
        temperature: float = 0.7,
        top_p: float = 1.0,
        top_k: int = 0,
        eos_token_id: int | Sequence[int] = EOT_ID,
        repetition_guard: bool = False,
        max_length: int | None = None,
        generator: torch.Generator | None = None,
        logits_hook: Callable[[torch.Tensor, list[int]], torch.Tensor] | None = None,
    ) -> Iterator[int]:
        """Yield sampled token ids one by one (the EOS token is not yielded).

        ``temperature <= 0`` means greedy. ``repetition_guard`` applies the TTS-3B rule: ban the last token
        when it appears more than once in the last 10 tokens. ``max_length`` caps prompt + generated tokens.
        Sampling follows transformers' order: processors (guard, hook), then temperature, top-k, top-p.
        """
        if not prompt_ids:
            raise ValueError("prompt_ids must not be empty")
        eos = {int(eos_token_id)} if isinstance(eos_token_id, int) else {int(e) for e in eos_token_id}
        device = self.lm_head.weight.device
        history = [int(t) for t in prompt_ids]
        budget = max_new_tokens
        if max_length is not None:
            budget = min(budget, max_length - len(history))
        ids = torch.tensor([history], dtype=torch.long, device=device)
        logits, past = self(ids)
        for _ in range(max(0, budget)):
            scores = logits[0, -1].clone()
            if repetition_guard:
                scores = apply_repetition_guard(scores, history)
            if logits_hook is not None:
                scores = logits_hook(scores, history)
            tok = sample_token(scores, temperature, top_p, generator, top_k=top_k)
            if tok in eos:
                return
            history.append(tok)
            yield tok
            logits, past = self(torch.tensor([[tok]], dtype=torch.long, device=device), past)

    def generate(self, prompt_ids: Sequence[int], **kwargs: object) -> list[int]:
        """Collect :meth:`generate_stream` into a list (same keyword arguments)."""
        return list(self.generate_stream(prompt_ids, **kwargs))  # type: ignore[arg-type]


def apply_repetition_guard(scores: torch.Tensor, history: Sequence[int], window: int = 10) -> torch.Tensor:
    """TTS-3B repetition guard: once ``window`` tokens exist, ban the last token if it occurs > 1 time in them."""
    if len(history) < window:
        return scores
    recent = list(history[-window:])
    last = recent[-1]
    if recent.count(last) > 1:
        scores = scores.clone()
        scores[last] = float("-inf")
    return scores


def sample_token(
    scores: torch.Tensor, temperature: float, top_p: float = 1.0, generator: torch.Generator | None = None,
    top_k: int = 0,
) -> int:
    """Sample from 1-D logits: temperature, then top-k (0 = off), then nucleus (top-p) filtering, as transformers'
    warpers do; greedy when temperature <= 0."""
    if temperature <= 0:
        return int(torch.argmax(scores).item())
    scaled = scores.float() / temperature
    if 0 < top_k < scaled.numel():
        kth = torch.topk(scaled, top_k).values[-1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    if top_p < 1.0:
        sorted_p, idx = torch.sort(probs, descending=True)
        cum = torch.cumsum(sorted_p, dim=-1)
        drop = cum - sorted_p > top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(0, idx, sorted_p)
        probs = probs / probs.sum()
    gen_device = generator.device if generator is not None else probs.device
    return int(torch.multinomial(probs.to(gen_device), 1, generator=generator).item())


def save_pretrained(model: Step1ForCausalLM, path: str | Path, max_shard_bytes: int = 2**31) -> None:
    """Write ``config.json`` + sharded safetensors + index in the published layout (used by tests/tools)."""
    from safetensors.torch import save_file

    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(model.config.to_dict(), indent=2), encoding="utf-8")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k, v in state.items():
        nbytes = v.numel() * v.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = v
        size += nbytes
    n = len(shards)
    weight_map = {}
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        save_file(shard, str(root / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in shard})
    total = sum(v.numel() * v.element_size() for v in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (root / "model.safetensors.index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
