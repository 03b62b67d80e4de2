"""CosyVoice v1 flow matching (``MaskedDiffWithXvec`` + ``ConditionalCFM``) for the 25 Hz Step-Audio tokens.

Token ids (X = vocab id - 65536, 0..5119, mixed linguistic/semantic) -> 80-bin mel at 22,050 Hz (hop 256).
Module tree mirrors the published ``flow.pt`` so its state dict loads with ``strict=True``:

* ``input_embedding`` (vocab, 512); ``spk_embed_affine_layer`` 192 -> 80
* ``encoder``: Conformer (linear input layer + ESPnet relative positions, 6 blocks, 8 heads, SiLU FFN 2048,
  no conv module, no macaron) -> ``encoder_proj`` 512 -> 80
* ``length_regulator``: interpolate to mel length + 4 x (conv3, GroupNorm(1), Mish) + conv1
* ``decoder.estimator``: Matcha-style 1-D U-Net (channels [256, 256], 4 transformer blocks per stage, 12 mid
  blocks, 8 heads x 64) on [x, mu, spk, cond] (320 channels)

Sampling: Euler, 10 steps, cosine time schedule ``t = 1 - cos(pi/2 * s)``, classifier-free guidance 0.7.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class FlowConfig:
    """Published CosyVoice-300M-25Hz flow hyper-parameters (``vocab_size`` is re-read from the checkpoint)."""

    input_size: int = 512
    output_size: int = 80
    spk_embed_dim: int = 192
    vocab_size: int = 5121
    input_frame_rate: float = 125.0 / 3.0
    sampling_rate: int = 22050
    hop_size: int = 256
    enc_heads: int = 8
    enc_linear_units: int = 2048
    enc_blocks: int = 6
    lr_sampling_ratios: tuple[int, ...] = (1, 1, 1, 1)
    dec_channels: tuple[int, ...] = (256, 256)
    dec_attention_head_dim: int = 64
    dec_n_blocks: int = 4
    dec_num_mid_blocks: int = 12
    dec_num_heads: int = 8
    n_timesteps: int = 10
    inference_cfg_rate: float = 0.7
    t_scheduler: str = "cosine"
    extra: dict = field(default_factory=dict)

    def mel_frames(self, n_tokens: int) -> int:
        """Mel frames for n tokens: int(n / rate * 22050 / 256)."""
        return int(n_tokens / self.input_frame_rate * self.sampling_rate / self.hop_size)


# ---------------------------------------------------------------------------- conformer encoder
class RelPositionalEncoding(nn.Module):
    """ESPnet relative positional encoding (scales x by sqrt(d), returns pos emb of length 2T-1)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.d_model = d_model
        self.xscale = math.sqrt(d_model)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D) -> (x * sqrt(D), pos_emb (1, 2T-1, D))."""
        t = x.shape[1]
        pos = torch.arange(t, dtype=torch.float32, device=x.device)[:, None]
        div = torch.exp(
            torch.arange(0, self.d_model, 2, dtype=torch.float32, device=x.device) * -(math.log(10000.0) / self.d_model)
        )
        pe_pos = torch.zeros(t, self.d_model, device=x.device)
        pe_neg = torch.zeros(t, self.d_model, device=x.device)
        pe_pos[:, 0::2] = torch.sin(pos * div)
        pe_pos[:, 1::2] = torch.cos(pos * div)
        pe_neg[:, 0::2] = torch.sin(-pos * div)
        pe_neg[:, 1::2] = torch.cos(-pos * div)
        pe = torch.cat([torch.flip(pe_pos, [0]), pe_neg[1:]], dim=0)[None].to(x.dtype)
        return x * self.xscale, pe


class LinearNoSubsampling(nn.Module):
    """``embed.out`` = Linear + LayerNorm + Dropout, followed by the positional encoding."""

    def __init__(self, idim: int, odim: int) -> None:
        super().__init__()
        self.out = nn.Sequential(nn.Linear(idim, odim), nn.LayerNorm(odim, eps=1e-5), nn.Dropout(0.0))
        self.pos_enc = RelPositionalEncoding(odim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project and add positions."""
        return self.pos_enc(self.out(x))


class RelPositionMultiHeadedAttention(nn.Module):
    """Transformer-XL style attention with learnt ``pos_bias_u`` / ``pos_bias_v``."""

    def __init__(self, n_head: int, n_feat: int) -> None:
        super().__init__()
        self.h = n_head
        self.d_k = n_feat // n_head
        self.linear_q = nn.Linear(n_feat, n_feat)
        self.linear_k = nn.Linear(n_feat, n_feat)
        self.linear_v = nn.Linear(n_feat, n_feat)
        self.linear_out = nn.Linear(n_feat, n_feat)
        self.linear_pos = nn.Linear(n_feat, n_feat, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(n_head, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.zeros(n_head, self.d_k))

    @staticmethod
    def rel_shift(x: torch.Tensor) -> torch.Tensor:
        """Align (B, H, T, 2T-1) relative scores to (B, H, T, T)."""
        b, h, t, n = x.shape
        x = torch.cat([x.new_zeros(b, h, t, 1), x], dim=-1).view(b, h, n + 1, t)
        return x[:, :, 1:].reshape(b, h, t, n)[:, :, :, : n // 2 + 1]

    def forward(self, x: torch.Tensor, mask: torch.Tensor, pos_emb: torch.Tensor) -> torch.Tensor:
        """x (B, T, D); mask (B, 1, T) bool (True = valid)."""
        b, t, _ = x.shape
        q = self.linear_q(x).view(b, t, self.h, self.d_k)
        k = self.linear_k(x).view(b, t, self.h, self.d_k).transpose(1, 2)
        v = self.linear_v(x).view(b, t, self.h, self.d_k).transpose(1, 2)
        p = self.linear_pos(pos_emb).view(pos_emb.shape[0], -1, self.h, self.d_k).transpose(1, 2)
        ac = torch.matmul((q + self.pos_bias_u).transpose(1, 2), k.transpose(-2, -1))
        bd = torch.matmul((q + self.pos_bias_v).transpose(1, 2), p.transpose(-2, -1))
        if bd.shape != ac.shape:
            bd = self.rel_shift(bd)
        scores = (ac + bd) / math.sqrt(self.d_k)
        m = ~mask[:, None, :, :]
        scores = scores.masked_fill(m, float("-inf"))
        attn = torch.softmax(scores, dim=-1).masked_fill(m, 0.0)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, t, self.h * self.d_k)
        return self.linear_out(out)


class PositionwiseFeedForward(nn.Module):
    """w_2(act(w_1(x))): SiLU ("swish") in the CosyVoice Conformer, ReLU in the Paraformer SANM encoder."""

    def __init__(self, d: int, hidden: int, activation: Callable[[torch.Tensor], torch.Tensor] = F.silu) -> None:
        super().__init__()
        self.w_1 = nn.Linear(d, hidden)
        self.w_2 = nn.Linear(hidden, d)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(self.activation(self.w_1(x)))


class ConformerEncoderLayer(nn.Module):
    """Pre-norm MHA + FFN (no conv module, no macaron), matching the flow config."""

    def __init__(self, d: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.self_attn = RelPositionMultiHeadedAttention(heads, d)
        self.feed_forward = PositionwiseFeedForward(d, hidden)
        self.norm_ff = nn.LayerNorm(d, eps=1e-5)
        self.norm_mha = nn.LayerNorm(d, eps=1e-5)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, pos_emb: torch.Tensor) -> torch.Tensor:
        """Residual blocks."""
        x = x + self.self_attn(self.norm_mha(x), mask, pos_emb)
        return x + self.feed_forward(self.norm_ff(x))


class ConformerEncoder(nn.Module):
    """Token encoder (``flow.encoder``)."""

    def __init__(self, d: int, heads: int, hidden: int, blocks: int) -> None:
        super().__init__()
        # Registration order = the reference's (BaseEncoder.__init__ registers embed and after_norm, then
        # ConformerEncoder adds encoders), so state_dict() lists keys in the published flow.pt order.
        self.embed = LinearNoSubsampling(d, d)
        self.after_norm = nn.LayerNorm(d, eps=1e-5)
        self.encoders = nn.ModuleList([ConformerEncoderLayer(d, heads, hidden) for _ in range(blocks)])

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x (B, T, D), lengths (B,) -> (B, T, D)."""
        mask = (torch.arange(x.shape[1], device=x.device)[None] < lengths[:, None])[:, None, :]
        x, pos = self.embed(x)
        for layer in self.encoders:
            x = layer(x, mask, pos)
        return self.after_norm(x)


class InterpolateRegulator(nn.Module):
    """Linear interpolation to the mel length followed by a conv stack (``flow.length_regulator``)."""

    def __init__(self, channels: int, sampling_ratios: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in sampling_ratios:
            layers += [nn.Conv1d(channels, channels, 3, 1, 1), nn.GroupNorm(1, channels), nn.Mish()]
        layers.append(nn.Conv1d(channels, channels, 1, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, h_prompt: torch.Tensor, h: torch.Tensor, mel_len1: int, mel_len2: int) -> torch.Tensor:
        """Interpolate prompt and target parts separately (B, T, C) -> (B, mel_len1 + mel_len2, C)."""
        x2 = F.interpolate(h.transpose(1, 2), size=mel_len2, mode="linear")
        if h_prompt.shape[1] > 0 and mel_len1 > 0:
            x1 = F.interpolate(h_prompt.transpose(1, 2), size=mel_len1, mode="linear")
            x2 = torch.cat([x1, x2], dim=2)
        return self.model(x2).transpose(1, 2)


# ---------------------------------------------------------------------------- estimator (1-D U-Net)
def sinusoidal_time_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """Matcha ``SinusoidalPosEmb``: (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * -(math.log(10000) / (half - 1)))
    emb = scale * t.float()[:, None] * freqs[None]
    return torch.cat([emb.sin(), emb.cos()], dim=-1)


class TimestepEmbedding(nn.Module):
    """linear_1 -> SiLU -> linear_2."""

    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed."""
        return self.linear_2(F.silu(self.linear_1(x)))


class Block1D(nn.Module):
    """Conv3 + GroupNorm(8) + Mish with masking."""

    def __init__(self, dim: int, dim_out: int, groups: int = 8) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv1d(dim, dim_out, 3, padding=1), nn.GroupNorm(groups, dim_out), nn.Mish())

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Masked conv block."""
        return self.block(x * mask) * mask


class ResnetBlock1D(nn.Module):
    """Two Block1D with a time-embedding shift and a 1x1 residual conv."""

    def __init__(self, dim: int, dim_out: int, time_emb_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Mish(), nn.Linear(time_emb_dim, dim_out))
        self.block1 = Block1D(dim, dim_out)
        self.block2 = Block1D(dim_out, dim_out)
        self.res_conv = nn.Conv1d(dim, dim_out, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Residual block conditioned on t."""
        h = self.block1(x, mask) + self.mlp(t)[:, :, None]
        h = self.block2(h, mask)
        return h + self.res_conv(x * mask)


class Downsample1D(nn.Module):
    """Strided conv (``.conv``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Halve time."""
        return self.conv(x)


class Upsample1D(nn.Module):
    """Transposed conv (``.conv``) doubling time."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose1d(dim, dim, 4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Double time."""
        return self.conv(x)


class Attention(nn.Module):
    """Diffusers-style self-attention: to_q/to_k/to_v without bias, ``to_out.0`` with bias."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Unmasked attention over time (B, T, C)."""
        b, t, _ = x.shape
        q, k, v = (f(x).view(b, t, self.heads, -1).transpose(1, 2) for f in (self.to_q, self.to_k, self.to_v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, -1)
        return self.to_out[1](self.to_out[0](out))


class GELUProj(nn.Module):
    """Diffusers ``GELU``: ``proj`` then exact GELU."""

    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project and activate."""
        return F.gelu(self.proj(x))


class FeedForward(nn.Module):
    """``net`` = [GELU(proj), Dropout, Linear]."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.ModuleList([GELUProj(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply."""
        for m in self.net:
            x = m(x)
        return x


class BasicTransformerBlock(nn.Module):
    """norm1 -> attn1 -> norm3 -> ff, both residual."""

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, head_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, T, C)."""
        x = x + self.attn1(self.norm1(x))
        return x + self.ff(self.norm3(x))


class ConditionalDecoder(nn.Module):
    """The velocity estimator (``decoder.estimator``)."""

    def __init__(self, cfg: FlowConfig) -> None:
        super().__init__()
        in_channels = cfg.output_size * 4
        channels = tuple(cfg.dec_channels)
        self.in_channels = in_channels
        time_dim = channels[0] * 4
        self.time_mlp = TimestepEmbedding(in_channels, time_dim)

        def blocks(dim: int) -> nn.ModuleList:
            return nn.ModuleList(
                [
                    BasicTransformerBlock(dim, cfg.dec_num_heads, cfg.dec_attention_head_dim)
                    for _ in range(cfg.dec_n_blocks)
                ]
            )

        self.down_blocks = nn.ModuleList()
        out_ch = in_channels
        for i, ch in enumerate(channels):
            in_ch, out_ch = out_ch, ch
            last = i == len(channels) - 1
            down: nn.Module = nn.Conv1d(out_ch, out_ch, 3, padding=1) if last else Downsample1D(out_ch)
            self.down_blocks.append(nn.ModuleList([ResnetBlock1D(in_ch, out_ch, time_dim), blocks(out_ch), down]))
        self.mid_blocks = nn.ModuleList(
            [
                nn.ModuleList([ResnetBlock1D(channels[-1], channels[-1], time_dim), blocks(channels[-1])])
                for _ in range(cfg.dec_num_mid_blocks)
            ]
        )
        up_channels = channels[::-1] + (channels[0],)
        self.up_blocks = nn.ModuleList()
        for i in range(len(up_channels) - 1):
            in_ch, out_ch = up_channels[i] * 2, up_channels[i + 1]
            last = i == len(up_channels) - 2
            up: nn.Module = nn.Conv1d(out_ch, out_ch, 3, padding=1) if last else Upsample1D(out_ch)
            self.up_blocks.append(nn.ModuleList([ResnetBlock1D(in_ch, out_ch, time_dim), blocks(out_ch), up]))
        self.final_block = Block1D(up_channels[-1], up_channels[-1])
        self.final_proj = nn.Conv1d(up_channels[-1], cfg.output_size, 1)

    @staticmethod
    def _run_blocks(x: torch.Tensor, tblocks: nn.ModuleList) -> torch.Tensor:
        x = x.transpose(1, 2)
        for blk in tblocks:
            x = blk(x)
        return x.transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        mu: torch.Tensor,
        t: torch.Tensor,
        spks: torch.Tensor,
        cond: torch.Tensor,
    ) -> torch.Tensor:
        """Velocity for state x at time t; all (B, 80, T) except spks (B, 80), t (B,)."""
        temb = self.time_mlp(sinusoidal_time_embedding(t, self.in_channels).to(x.dtype))
        x = torch.cat([x, mu, spks[:, :, None].expand(-1, -1, x.shape[-1]), cond], dim=1)
        hiddens = []
        masks = [mask]
        for resnet, tblocks, down in self.down_blocks:
            m = masks[-1]
            x = self._run_blocks(resnet(x, m, temb), tblocks)
            hiddens.append(x)
            x = down(x * m)
            masks.append(m[:, :, ::2])
        masks = masks[:-1]
        m_mid = masks[-1]
        for resnet, tblocks in self.mid_blocks:
            x = self._run_blocks(resnet(x, m_mid, temb), tblocks)
        m_up = mask
        for resnet, tblocks, up in self.up_blocks:
            m_up = masks.pop()
            skip = hiddens.pop()
            x = torch.cat([x[:, :, : skip.shape[-1]], skip], dim=1)
            x = self._run_blocks(resnet(x, m_up, temb), tblocks)
            x = up(x * m_up)
        x = self.final_block(x, m_up)
        return self.final_proj(x * m_up) * mask


class ConditionalCFM(nn.Module):
    """Euler ODE sampler with classifier-free guidance; parameters live in ``estimator``."""

    def __init__(self, cfg: FlowConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.estimator = ConditionalDecoder(cfg)

    def time_span(self, n_steps: int, device: torch.device) -> torch.Tensor:
        """t grid: linspace(0, 1, n+1), cosine-warped ``1 - cos(pi/2 t)``."""
        t = torch.linspace(0, 1, n_steps + 1, device=device)
        if self.cfg.t_scheduler == "cosine":
            t = 1 - torch.cos(t * 0.5 * torch.pi)
        return t

    def forward(
        self,
        mu: torch.Tensor,
        mask: torch.Tensor,
        spks: torch.Tensor,
        cond: torch.Tensor,
        noise: torch.Tensor,
        n_timesteps: int | None = None,
    ) -> torch.Tensor:
        """Integrate from ``noise`` (B, 80, T) to a mel."""
        n = n_timesteps or self.cfg.n_timesteps
        t_span = self.time_span(n, mu.device)
        x = noise
        w = self.cfg.inference_cfg_rate
        for i in range(1, len(t_span)):
            t, dt = t_span[i - 1], t_span[i] - t_span[i - 1]
            tt = t.reshape(1).expand(x.shape[0]).to(x.dtype)
            if w > 0:
                out = self.estimator(
                    torch.cat([x, x]),
                    torch.cat([mask, mask]),
                    torch.cat([mu, torch.zeros_like(mu)]),
                    torch.cat([tt, tt]),
                    torch.cat([spks, torch.zeros_like(spks)]),
                    torch.cat([cond, torch.zeros_like(cond)]),
                )
                v, v_uncond = out.chunk(2, dim=0)
                v = (1.0 + w) * v - w * v_uncond
            else:
                v = self.estimator(x, mask, mu, tt, spks, cond)
            x = x + dt.to(x.dtype) * v
        return x


class MaskedDiffWithXvec(nn.Module):
    """Tokens + prompt (tokens, mel, x-vector) -> mel for the target tokens."""

    def __init__(self, cfg: FlowConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or FlowConfig()
        self.cfg = cfg
        self.input_embedding = nn.Embedding(cfg.vocab_size, cfg.input_size)
        self.spk_embed_affine_layer = nn.Linear(cfg.spk_embed_dim, cfg.output_size)
        self.encoder = ConformerEncoder(cfg.input_size, cfg.enc_heads, cfg.enc_linear_units, cfg.enc_blocks)
        self.encoder_proj = nn.Linear(cfg.input_size, cfg.output_size)
        # decoder before length_regulator, as in the reference __init__ (key order of the published flow.pt)
        self.decoder = ConditionalCFM(cfg)
        self.length_regulator = InterpolateRegulator(cfg.output_size, cfg.lr_sampling_ratios)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (1, T) -> projected encoder output (1, T, 80)."""
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.cfg.vocab_size):
            raise ValueError(f"flow token ids must be in 0..{self.cfg.vocab_size - 1}")
        emb = self.input_embedding(tokens)
        lengths = torch.tensor([tokens.shape[1]], device=tokens.device)
        return self.encoder_proj(self.encoder(emb, lengths))

    @torch.inference_mode()
    def inference(
        self,
        tokens: torch.Tensor,
        prompt_tokens: torch.Tensor,
        prompt_feat: torch.Tensor,
        embedding: torch.Tensor,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        n_timesteps: int | None = None,
        mel_len2: int | None = None,
    ) -> torch.Tensor:
        """Synthesize the mel for ``tokens`` (1, T2) given a prompt: tokens (1, T1), mel (1, M1, 80), x-vector (1, 192).

        ``noise`` (1, 80, M1+M2) fixes the ODE start; otherwise it is drawn from ``generator``.
        Returns (1, 80, M2) with M2 = int(T2 / 41.67 * 22050 / 256) unless ``mel_len2`` is given.
        """
        dtype = self.input_embedding.weight.dtype
        emb = F.normalize(embedding.to(dtype), dim=1)
        spks = self.spk_embed_affine_layer(emb)
        t1 = prompt_tokens.shape[1]
        h = self.encode(torch.cat([prompt_tokens, tokens], dim=1))
        mel_len1 = prompt_feat.shape[1]
        m2 = self.cfg.mel_frames(tokens.shape[1]) if mel_len2 is None else mel_len2
        h = self.length_regulator(h[:, :t1], h[:, t1:], mel_len1, m2)
        total = mel_len1 + m2
        cond = torch.zeros(1, total, self.cfg.output_size, device=h.device, dtype=dtype)
        cond[:, :mel_len1] = prompt_feat.to(dtype)
        cond = cond.transpose(1, 2)
        mask = torch.ones(1, 1, total, device=h.device, dtype=dtype)
        if noise is None:
            noise = torch.randn(1, self.cfg.output_size, total, generator=generator, device="cpu").to(h.device, dtype)
        mel = self.decoder(h.transpose(1, 2), mask, spks, cond, noise.to(h.device, dtype), n_timesteps)
        return mel[:, :, mel_len1:].float()


def load_flow(
    path: str | Path, device: str | torch.device = "cpu", cfg: FlowConfig | None = None
) -> MaskedDiffWithXvec:
    """Load ``flow.pt`` (a state dict pickle) with ``weights_only=True`` and ``strict=True``.

    ``vocab_size`` is taken from ``input_embedding.weight``. bf16 on CUDA, fp32 on CPU.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p} is missing")
    state = torch.load(str(p), map_location="cpu", weights_only=True)
    cfg = cfg or FlowConfig()
    if "input_embedding.weight" in state:
        cfg.vocab_size = int(state["input_embedding.weight"].shape[0])
    with torch.device("meta"):
        model = MaskedDiffWithXvec(cfg)
    model.load_state_dict(state, strict=True, assign=True)
    device = torch.device(device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return model.to(device=device, dtype=dtype).eval()
