"""Write the reference state-dict key/shape lists of the PUBLISHED checkpoints (see README.md in this folder).

These lists are derived from the reference source code and configs, NOT from ``models/stepaudio``: each function
below walks the reference module tree by hand (attribute names, ``nn.Sequential`` / ``ModuleList`` indices,
parameter registration order, conv shapes) so that the layout tests compare our modules against an independent
description. Sources (file + commit read) are listed in README.md.

Run: .venv/bin/python tests/models/data/make_reference_keys.py   (pure Python, imports nothing from the repo)
"""

from __future__ import annotations

import json
from pathlib import Path

Entry = list  # [name, [shape...]]


def _linear(p: str, out: int, inp: int, bias: bool = True) -> list[Entry]:
    return [[f"{p}.weight", [out, inp]]] + ([[f"{p}.bias", [out]]] if bias else [])


def _norm(p: str, n: int) -> list[Entry]:
    """LayerNorm / GroupNorm affine parameters."""
    return [[f"{p}.weight", [n]], [f"{p}.bias", [n]]]


def _conv(p: str, out: int, inp: int, k: int, bias: bool = True) -> list[Entry]:
    return [[f"{p}.weight", [out, inp, k]]] + ([[f"{p}.bias", [out]]] if bias else [])


def _wn_conv(p: str, out: int, inp: int, k: int) -> list[Entry]:
    """``torch.nn.utils.weight_norm`` (dim=0) on Conv1d: ``weight`` leaves ``_parameters`` and ``weight_g`` /
    ``weight_v`` are appended, so the order is bias, weight_g, weight_v."""
    return [[f"{p}.bias", [out]], [f"{p}.weight_g", [out, 1, 1]], [f"{p}.weight_v", [out, inp, k]]]


def _wn_convt(p: str, inp: int, out: int, k: int) -> list[Entry]:
    """weight_norm on ConvTranspose1d: weight is (in, out, k) and dim=0 normalises over ``in``."""
    return [[f"{p}.bias", [out]], [f"{p}.weight_g", [inp, 1, 1]], [f"{p}.weight_v", [inp, out, k]]]


# ------------------------------------------------------------------------------------------------ flow.pt
def flow_keys(vocab: int = 5121) -> list[Entry]:
    """``MaskedDiffWithXvec`` of CosyVoice-300M-25Hz (cosyvoice.yaml ``flow:``), Step-Audio cosyvoice/ tree.

    Top-level registration order in MaskedDiffWithXvec.__init__: input_embedding, spk_embed_affine_layer,
    encoder, encoder_proj, decoder, length_regulator.
    """
    d, heads, ff, blocks = 512, 8, 2048, 6
    out: list[Entry] = [["input_embedding.weight", [vocab, d]]]
    out += _linear("spk_embed_affine_layer", 80, 192)
    # ConformerEncoder: BaseEncoder.__init__ registers embed (LinearNoSubsampling: out = Sequential(Linear,
    # LayerNorm, Dropout) + EspnetRelPositionalEncoding whose ``pe`` is a plain attribute) and after_norm;
    # the subclass then adds ``encoders``. No macaron, no conv module -> norm_ff, norm_mha only.
    out += _linear("encoder.embed.out.0", d, d) + _norm("encoder.embed.out.1", d)
    out += _norm("encoder.after_norm", d)
    for i in range(blocks):
        p = f"encoder.encoders.{i}"
        # RelPositionMultiHeadedAttention: own params pos_bias_u/v first, then children linear_q/k/v/out (from
        # MultiHeadedAttention) and linear_pos (bias=False).
        out += [[f"{p}.self_attn.pos_bias_u", [heads, d // heads]], [f"{p}.self_attn.pos_bias_v", [heads, d // heads]]]
        for n in ("linear_q", "linear_k", "linear_v", "linear_out"):
            out += _linear(f"{p}.self_attn.{n}", d, d)
        out += _linear(f"{p}.self_attn.linear_pos", d, d, bias=False)
        out += _linear(f"{p}.feed_forward.w_1", ff, d) + _linear(f"{p}.feed_forward.w_2", d, ff)
        out += _norm(f"{p}.norm_ff", d) + _norm(f"{p}.norm_mha", d)
    out += _linear("encoder_proj", 80, d)
    out += _estimator_keys("decoder.estimator")
    # InterpolateRegulator(channels=80, sampling_ratios=[1,1,1,1]): 4 x (Conv1d k3, GroupNorm(1), Mish) + Conv1d k1
    for j in range(4):
        out += _conv(f"length_regulator.model.{3 * j}", 80, 80, 3) + _norm(f"length_regulator.model.{3 * j + 1}", 80)
    out += _conv("length_regulator.model.12", 80, 80, 1)
    return out


def _resnet(p: str, dim: int, dim_out: int, t: int) -> list[Entry]:
    """matcha ResnetBlock1D: mlp = Sequential(Mish, Linear); block1/block2 = Block1D (Sequential(Conv1d k3,
    GroupNorm(8), Mish)); res_conv Conv1d k1."""
    out = _linear(f"{p}.mlp.1", dim_out, t)
    out += _conv(f"{p}.block1.block.0", dim_out, dim, 3) + _norm(f"{p}.block1.block.1", dim_out)
    out += _conv(f"{p}.block2.block.0", dim_out, dim_out, 3) + _norm(f"{p}.block2.block.1", dim_out)
    return out + _conv(f"{p}.res_conv", dim_out, dim, 1)


def _tblock(p: str, dim: int, heads: int = 8, head_dim: int = 64) -> list[Entry]:
    """matcha BasicTransformerBlock (act 'gelu', no cross attention -> norm2/attn2 are None): norm1, attn1
    (diffusers Attention: to_q/to_k/to_v bias=False, to_out = ModuleList([Linear, Dropout])), norm3,
    ff (net = [GELU(proj), Dropout, Linear])."""
    inner = heads * head_dim
    out = _norm(f"{p}.norm1", dim)
    for n in ("to_q", "to_k", "to_v"):
        out += _linear(f"{p}.attn1.{n}", inner, dim, bias=False)
    out += _linear(f"{p}.attn1.to_out.0", dim, inner)
    out += _norm(f"{p}.norm3", dim)
    return out + _linear(f"{p}.ff.net.0.proj", 4 * dim, dim) + _linear(f"{p}.ff.net.2", dim, 4 * dim)


def _estimator_keys(p: str) -> list[Entry]:
    """cosyvoice/flow/decoder.py ConditionalDecoder(in 320, out 80, channels [256, 256], n_blocks 4,
    num_mid_blocks 12, heads 8 x 64)."""
    cin, ch, nb, mid = 320, (256, 256), 4, 12
    t = ch[0] * 4
    out = _linear(f"{p}.time_mlp.linear_1", t, cin) + _linear(f"{p}.time_mlp.linear_2", t, t)
    oc = cin
    for i, c in enumerate(ch):
        ic, oc = oc, c
        q = f"{p}.down_blocks.{i}"
        out += _resnet(f"{q}.0", ic, oc, t)
        for j in range(nb):
            out += _tblock(f"{q}.1.{j}", oc)
        # Downsample1D (.conv, k3 s2) except for the last stage, which is a bare Conv1d k3
        out += _conv(f"{q}.2" + ("" if i == len(ch) - 1 else ".conv"), oc, oc, 3)
    for i in range(mid):
        q = f"{p}.mid_blocks.{i}"
        out += _resnet(f"{q}.0", ch[-1], ch[-1], t)
        for j in range(nb):
            out += _tblock(f"{q}.1.{j}", ch[-1])
    up = ch[::-1] + (ch[0],)
    for i in range(len(up) - 1):
        ic, oc = up[i] * 2, up[i + 1]
        q = f"{p}.up_blocks.{i}"
        out += _resnet(f"{q}.0", ic, oc, t)
        for j in range(nb):
            out += _tblock(f"{q}.1.{j}", oc)
        if i == len(up) - 2:
            out += _conv(f"{q}.2", oc, oc, 3)
        else:  # Upsample1D(use_conv_transpose=True): ConvTranspose1d(c, c, 4, 2, 1) -> weight (in, out, k)
            out += [[f"{q}.2.conv.weight", [oc, oc, 4]], [f"{q}.2.conv.bias", [oc]]]
    out += _conv(f"{p}.final_block.block.0", up[-1], up[-1], 3) + _norm(f"{p}.final_block.block.1", up[-1])
    return out + _conv(f"{p}.final_proj", 80, up[-1], 1)


# ------------------------------------------------------------------------------------------------ hift.pt
def _resblock(p: str, ch: int, k: int, dil: tuple[int, ...] = (1, 3, 5)) -> list[Entry]:
    """hifigan ResBlock: convs1, convs2 (weight_norm Conv1d), activations1/2 (Snake: ``alpha`` (ch,))."""
    out: list[Entry] = []
    for name in ("convs1", "convs2"):
        for j in range(len(dil)):
            out += _wn_conv(f"{p}.{name}.{j}", ch, ch, k)
    for name in ("activations1", "activations2"):
        out += [[f"{p}.{name}.{j}.alpha", [ch]] for j in range(len(dil))]
    return out


def hift_keys() -> list[Entry]:
    """HiFTGenerator of cosyvoice.yaml ``hift:`` (base 512, ups [8, 8] k16, n_fft 16, resblocks k [3, 7, 11],
    source resblocks k [7, 11], ConvRNNF0Predictor cond 512). Registration order: m_source, (f0_upsamp),
    conv_pre, ups, source_downs, source_resblocks, resblocks, conv_post, (reflection_pad), f0_predictor;
    ``stft_window`` is a plain tensor attribute (not in the state dict)."""
    base, nfft = 512, 16
    out: list[Entry] = _linear("m_source.l_linear", 1, 9)  # SourceModuleHnNSF: harmonic_num 8 + 1 -> 1
    out += _wn_conv("conv_pre", base, 80, 7)
    out += _wn_convt("ups.0", base, base // 2, 16) + _wn_convt("ups.1", base // 2, base // 4, 16)
    # downsample_rates [1, 8] -> cum [1, 8] reversed [8, 1]: stage 0 Conv1d(18, 256, 16, 8), stage 1 Conv1d k1
    out += _conv("source_downs.0", base // 2, nfft + 2, 16) + _conv("source_downs.1", base // 4, nfft + 2, 1)
    out += _resblock("source_resblocks.0", base // 2, 7) + _resblock("source_resblocks.1", base // 4, 11)
    r = 0
    for ch in (base // 2, base // 4):
        for k in (3, 7, 11):
            out += _resblock(f"resblocks.{r}", ch, k)
            r += 1
    out += _wn_conv("conv_post", nfft + 2, base // 4, 7)
    for j in range(5):  # condnet = Sequential(weight_norm(Conv1d k3), ELU) x 5 -> indices 0, 2, 4, 6, 8
        out += _wn_conv(f"f0_predictor.condnet.{2 * j}", 512, 80 if j == 0 else 512, 3)
    return out + _linear("f0_predictor.classifier", 1, 512)


# ------------------------------------------------------------------------------------------------ Step1
def step1_keys(
    hidden: int = 3072, inter: int = 8192, heads: int = 48, groups: int = 4, layers: int = 32, vocab: int = 74752
) -> list[Entry]:
    """Step1ForCausalLM (Step-Audio-TTS-3B sizes): model.{embed_tokens, layers (Sequential of StepLayer:
    self_attn q/k/v/o, mlp gate/up/down, input_layernorm, post_attention_layernorm), norm}, lm_head. No biases."""
    hd = hidden // heads
    out: list[Entry] = [["model.embed_tokens.weight", [vocab, hidden]]]
    for i in range(layers):
        p = f"model.layers.{i}"
        out += _linear(f"{p}.self_attn.q_proj", hidden, hidden, bias=False)
        out += _linear(f"{p}.self_attn.k_proj", groups * hd, hidden, bias=False)
        out += _linear(f"{p}.self_attn.v_proj", groups * hd, hidden, bias=False)
        out += _linear(f"{p}.self_attn.o_proj", hidden, hidden, bias=False)
        out += _linear(f"{p}.mlp.gate_proj", inter, hidden, bias=False)
        out += _linear(f"{p}.mlp.up_proj", inter, hidden, bias=False)
        out += _linear(f"{p}.mlp.down_proj", hidden, inter, bias=False)
        out += [[f"{p}.input_layernorm.weight", [hidden]], [f"{p}.post_attention_layernorm.weight", [hidden]]]
    return out + [["model.norm.weight", [hidden]], ["lm_head.weight", [vocab, hidden]]]


# ------------------------------------------------------------------------------------------------ Paraformer
def paraformer_encoder_keys(
    idim: int = 560, d: int = 512, ff: int = 2048, blocks: int = 50, kernel: int = 11
) -> list[Entry]:
    """``encoder.*`` of the FunASR paraformer-large online model.pt (SANMEncoderChunkOpt, input_layer
    'pe_online' without parameters): encoders0 (1 layer, 560 -> 512), encoders (blocks - 1), after_norm."""

    def layer(p: str, i: int) -> list[Entry]:
        out = _linear(f"{p}.self_attn.linear_out", d, d) + _linear(f"{p}.self_attn.linear_q_k_v", 3 * d, i)
        out += [[f"{p}.self_attn.fsmn_block.weight", [d, 1, kernel]]]  # depthwise, bias=False
        out += _linear(f"{p}.feed_forward.w_1", ff, d) + _linear(f"{p}.feed_forward.w_2", d, ff)
        return out + _norm(f"{p}.norm1", i) + _norm(f"{p}.norm2", d)

    out = layer("encoder.encoders0.0", idim)
    for j in range(blocks - 1):
        out += layer(f"encoder.encoders.{j}", d)
    return out + _norm("encoder.after_norm", d)


LISTS = {
    "flow_state_keys.json": flow_keys,
    "hift_state_keys.json": hift_keys,
    "step1_tts3b_state_keys.json": step1_keys,
    "paraformer_encoder_keys.json": paraformer_encoder_keys,
}


def main() -> None:
    """Write every list next to this file."""
    here = Path(__file__).resolve().parent
    for name, fn in LISTS.items():
        (here / name).write_text(json.dumps(fn()), encoding="utf-8")


if __name__ == "__main__":
    main()
