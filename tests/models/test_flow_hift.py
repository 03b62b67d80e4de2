"""Flow + HiFT: state-dict layout equals the published checkpoints; tiny checkpoints load and synthesise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.stepaudio.flow import FlowConfig, MaskedDiffWithXvec, load_flow
from models.stepaudio.hift import HiFTConfig, HiFTGenerator, load_hift
from tests.models.conftest import tiny_flow_config, tiny_hift_config

GOLDEN_MEL_ABS_SUM = 5917.74
GOLDEN_WAV_ABS_SUM = 179.777
DATA = Path(__file__).parent / "data"


def _keys(m: torch.nn.Module) -> list[list]:
    return [[k, list(v.shape)] for k, v in m.state_dict().items()]


def test_flow_layout_matches_reference() -> None:
    with torch.device("meta"):
        m = MaskedDiffWithXvec(FlowConfig())
    ref = json.loads((DATA / "flow_state_keys.json").read_text())
    assert _keys(m) == ref
    n = sum(int(np.prod(s)) for _, s in ref)
    assert n * 4 == pytest.approx(422e6, rel=0.01)  # published flow.pt is ~422 MB of fp32
    names = {k for k, _ in ref}
    for k in (
        "input_embedding.weight",
        "encoder.encoders.5.self_attn.pos_bias_u",
        "length_regulator.model.12.weight",
        "decoder.estimator.mid_blocks.11.1.3.ff.net.2.weight",
        "decoder.estimator.up_blocks.0.2.conv.weight",
    ):
        assert k in names


def test_hift_layout_matches_reference() -> None:
    with torch.device("meta"):
        m = HiFTGenerator(HiFTConfig())
    ref = json.loads((DATA / "hift_state_keys.json").read_text())
    assert _keys(m) == ref
    n = sum(int(np.prod(s)) for _, s in ref)
    assert n * 4 == pytest.approx(82e6, rel=0.01)  # published hift.pt is ~82 MB
    names = {k for k, _ in ref}
    assert {"conv_pre.weight_g", "f0_predictor.condnet.8.weight_v", "m_source.l_linear.weight"} <= names


def test_flow_and_hift_tiny(cosy_dir: Path) -> None:
    flow = load_flow(cosy_dir / "flow.pt", cfg=tiny_flow_config())
    hift = load_hift(cosy_dir / "hift.pt", cfg=tiny_hift_config())
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 5120, (1, 42), generator=g)
    ptoks = torch.randint(0, 5120, (1, 10), generator=g)
    pmel = torch.randn(1, 52, 80, generator=g)
    emb = torch.randn(1, 192, generator=g)
    mel = flow.inference(tokens, ptoks, pmel, emb, generator=torch.Generator().manual_seed(1))
    assert mel.shape == (1, 80, int(42 / (125 / 3) * 22050 / 256))
    mel2 = flow.inference(tokens, ptoks, pmel, emb, generator=torch.Generator().manual_seed(1))
    assert torch.equal(mel, mel2)
    assert float(mel.abs().sum()) == pytest.approx(GOLDEN_MEL_ABS_SUM, rel=1e-3)
    wav, src = hift.inference(mel, generator=torch.Generator().manual_seed(2))
    assert wav.shape == (1, mel.shape[2] * 256) and src.shape == (1, 1, mel.shape[2] * 256)
    assert float(wav.abs().max()) <= 0.99
    assert float(wav.abs().sum()) == pytest.approx(GOLDEN_WAV_ABS_SUM, rel=1e-3)


def test_flow_rejects_out_of_range_tokens(cosy_dir: Path) -> None:
    flow = load_flow(cosy_dir / "flow.pt", cfg=tiny_flow_config())
    with pytest.raises(ValueError, match="0..5120"):
        flow.inference(
            torch.tensor([[6000]]), torch.zeros(1, 0, dtype=torch.long), torch.zeros(1, 0, 80), torch.ones(1, 192)
        )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_cuda_matches_cpu(cosy_dir: Path) -> None:
    from models.stepaudio.step1 import Step1ForCausalLM
    from tests.models.conftest import make_step1

    d = cosy_dir.parent / "llm"
    make_step1(d)
    cpu = Step1ForCausalLM.from_pretrained(d)
    gpu = Step1ForCausalLM.from_pretrained(d, device="cuda")
    ids = torch.tensor([[1, 4, 100, 65536, 70000, 3]])
    a, _ = cpu(ids)
    b, _ = gpu(ids.cuda())
    assert torch.allclose(a, b.cpu(), atol=5e-2, rtol=5e-2)
    f_cpu = load_flow(cosy_dir / "flow.pt", cfg=tiny_flow_config())
    f_gpu = load_flow(cosy_dir / "flow.pt", device="cuda", cfg=tiny_flow_config())
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 5120, (1, 30), generator=g)
    noise = torch.randn(1, 80, 40 + f_cpu.cfg.mel_frames(30), generator=g)
    args = (tokens, tokens[:, :8], torch.randn(1, 40, 80, generator=g), torch.randn(1, 192, generator=g))
    m_cpu = f_cpu.inference(*args, noise=noise)
    m_gpu = f_gpu.inference(*(a.cuda() for a in args), noise=noise.cuda()).cpu()
    assert (m_cpu - m_gpu).abs().mean() < 0.1 * m_cpu.abs().mean() + 0.05
    h_cpu = load_hift(cosy_dir / "hift.pt", cfg=tiny_hift_config())
    h_gpu = load_hift(cosy_dir / "hift.pt", device="cuda", cfg=tiny_hift_config())
    s = h_cpu.source(m_cpu)
    w_cpu = h_cpu.decode(m_cpu, s)
    assert next(h_gpu.parameters()).dtype == torch.float32  # only the flow is bf16, as in the reference
    w_gpu = h_gpu.decode(m_cpu.cuda(), s.cuda()).cpu()
    assert (w_cpu - w_gpu).abs().mean() < 0.1 * w_cpu.abs().mean() + 1e-3
