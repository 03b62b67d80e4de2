"""Tiny random Step-Audio checkpoints in the REAL published layouts: tests, CI and laptops (``stepaudio models
make-tiny DIR``).

Every builder is seeded and small, so a whole store is written in seconds and runs on 2 CPU cores. Sizes are
tiny, interfaces are real: Step1 has the real vocabulary (audio ids 65536..70655), the flow the real 80-bin mel,
192-d x-vector and 5121-token vocabulary, HiFT the real 256-sample hop, the tokenizer files the real names.

The store (:func:`make_tiny_store`)::

    DIR/Step-Audio-Tokenizer/{linguistic_tokenizer.npy, speech_tokenizer_v1.onnx, dengcunqin/.../model.pt, ...}
    DIR/Step-Audio-Chat/{config.json, model.safetensors.index.json + shards, tokenizer.model, step1_probe.npz}
    DIR/Step-Audio-TTS-3B/{config.json, shards, tokenizer.model, step1_probe.npz,
                           CosyVoice-300M-25Hz{,-Music}/{cosyvoice.yaml, flow.pt, hift.pt, campplus.onnx,
                                                        model_config.json}}
    DIR/voices/{joe,joeRAP}.{wav,txt}

The tiny checkpoints' ``tokenizer.model`` is a placeholder: ``config.json`` names the byte codec
(:mod:`models.stepaudio.text_codec`). The tiny chat model only ever says lower-case letters, spaces and full stops
(its output layer is shaped so), so a reply is short printable text that TTS can speak.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from models.stepaudio.flow import FlowConfig, MaskedDiffWithXvec
from models.stepaudio.hift import HiFTConfig, HiFTGenerator
from models.stepaudio.step1 import EOT_ID, Step1Config, Step1ForCausalLM, save_pretrained
from models.stepaudio.tokenizer import ParaformerConfig, SANMEncoder

BYTE_OFFSET = 256
VOICE_TEXT = "This is the tiny test voice speaking one sentence."

PARAFORMER_SUBDIR = "dengcunqin/speech_paraformer-large_asr_nat-zh-cantonese-en-16k-vocab8501-online"
TINY_PARAFORMER = {"output_size": 16, "attention_heads": 2, "linear_units": 32, "num_blocks": 3, "kernel_size": 5}


def tiny_step1_config() -> Step1Config:
    """Step1 with the real vocab (audio ids 65536..70655 exist) and 6 heads / 2 KV groups."""
    return Step1Config(
        hidden_size=48,
        intermediate_size=64,
        num_attention_heads=6,
        num_attention_groups=2,
        num_hidden_layers=2,
        vocab_size=74752,
        max_seq_len=8192,  # ALiBi has no position table: the TTS-3B prompt (system text + voice) needs > 1k
    )


def tiny_flow_config() -> FlowConfig:
    """Flow with the real I/O sizes (80 mel, 192 x-vector, 5121 vocab) and tiny internals."""
    return FlowConfig(
        input_size=32,
        enc_heads=2,
        enc_linear_units=64,
        enc_blocks=1,
        dec_channels=(32, 32),
        dec_attention_head_dim=8,
        dec_n_blocks=1,
        dec_num_mid_blocks=1,
        dec_num_heads=2,
    )


def tiny_hift_config() -> HiFTConfig:
    """HiFT with the real hop (8*8*4 = 256) and tiny channels."""
    return HiFTConfig(
        base_channels=32,
        f0_cond_channels=16,
        resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1]],
        source_resblock_kernel_sizes=[3, 3],
        source_resblock_dilation_sizes=[[1], [1]],
    )


def _scale_params(module: torch.nn.Module, std: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(module.named_parameters()):
            p.copy_(torch.randn(p.shape, generator=g) * std)


def make_step1(dir_: Path, seed: int = 0) -> Step1ForCausalLM:
    """Tiny Step1 saved as sharded safetensors + index + config.json."""
    torch.manual_seed(seed)
    model = Step1ForCausalLM(tiny_step1_config())
    _scale_params(model, 0.05, seed)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.input_layernorm.weight.fill_(1.0)
            layer.post_attention_layernorm.weight.fill_(1.0)
        model.model.norm.weight.fill_(1.0)
    save_pretrained(model, dir_, max_shard_bytes=4_000_000)
    return model.eval()


def make_flow(path: Path, seed: int = 0) -> MaskedDiffWithXvec:
    """Tiny flow.pt (plain state dict)."""
    torch.manual_seed(seed)
    model = MaskedDiffWithXvec(tiny_flow_config())
    _scale_params(model, 0.1, seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.LayerNorm, torch.nn.GroupNorm)):
                m.weight.fill_(1.0)
                m.bias.zero_()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), str(path))
    return model.eval()


def make_hift(path: Path, seed: int = 0) -> HiFTGenerator:
    """Tiny hift.pt (state dict with weight_g/weight_v)."""
    torch.manual_seed(seed)
    model = HiFTGenerator(tiny_hift_config())
    _scale_params(model, 0.05, seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("alpha"):
                p.fill_(1.0)
            if name.endswith("weight_g"):
                p.abs_().add_(0.2)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), str(path))
    return model.eval()


def make_paraformer_dir(dir_: Path, seed: int = 0) -> None:
    """FunASR-style dir: model.pt (encoder.* + decoder.* keys), config.yaml, am.mvn, tokens.json, seg_dict."""
    import yaml

    dir_.mkdir(parents=True, exist_ok=True)
    cfg = ParaformerConfig(**TINY_PARAFORMER)
    torch.manual_seed(seed)
    enc = SANMEncoder(cfg)
    _scale_params(enc, 0.1, seed)
    with torch.no_grad():
        for m in enc.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.fill_(1.0)
                m.bias.zero_()
    state = {f"encoder.{k}": v for k, v in enc.state_dict().items()}
    state["decoder.embed.0.weight"] = torch.zeros(8, 4)  # other Paraformer parts must be ignored
    torch.save(state, str(dir_ / "model.pt"))
    conf = {
        "model": "ParaformerStreaming",
        "encoder": "SANMEncoderChunkOpt",
        "encoder_conf": {**TINY_PARAFORMER, "input_layer": "pe_online", "sanm_shfit": 0, "chunk_size": [12, 15]},
        "frontend": "WavFrontendOnline",
        "frontend_conf": {
            "fs": 16000,
            "window": "hamming",
            "n_mels": 80,
            "frame_length": 25,
            "frame_shift": 10,
            "lfr_m": 7,
            "lfr_n": 6,
        },
    }
    (dir_ / "config.yaml").write_text(yaml.safe_dump(conf), encoding="utf-8")
    rng = np.random.default_rng(seed)
    shift = -rng.uniform(8, 12, 560)
    scale = 1.0 / rng.uniform(2, 4, 560)
    mvn = (
        "<Nnet>\n<Splice> 560 560\n[ 0 ]\n<AddShift> 560 560\n<LearnRateCoef> 0 [ "
        + " ".join(f"{v:.6f}" for v in shift)
        + " ]\n<Rescale> 560 560\n<LearnRateCoef> 0 [ "
        + " ".join(f"{v:.6f}" for v in scale)
        + " ]\n</Nnet>\n"
    )
    (dir_ / "am.mvn").write_text(mvn, encoding="utf-8")
    (dir_ / "tokens.json").write_text(json.dumps(["<blank>", "<s>", "</s>", "a"]), encoding="utf-8")
    (dir_ / "seg_dict").write_text("a a\n", encoding="utf-8")


def make_semantic_onnx(path: Path, seed: int = 0) -> None:
    """speech_tokenizer_v1.onnx stand-in with the real interface: feats (1,128,T) f32 + feats_length (1,) i32
    -> indices (1, T/4) int64 in 0..4095 (stride-4 conv, argmax, hashed into the codebook)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((64, 128, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["feats", "W"], ["h"], strides=[4], kernel_shape=[4]),
        helper.make_node("ArgMax", ["h"], ["am"], axis=1, keepdims=0),
        helper.make_node("Mul", ["am", "mult"], ["amm"]),
        helper.make_node("Mod", ["amm", "cb"], ["indices"]),
    ]
    graph = helper.make_graph(
        nodes,
        "speech_tokenizer_v1_tiny",
        [
            helper.make_tensor_value_info("feats", TensorProto.FLOAT, [1, 128, "T"]),
            helper.make_tensor_value_info("feats_length", TensorProto.INT32, [1]),
        ],
        [helper.make_tensor_value_info("indices", TensorProto.INT64, [1, "T4"])],
        [
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(np.array(67, dtype=np.int64), "mult"),
            numpy_helper.from_array(np.array(4096, dtype=np.int64), "cb"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def make_campplus_onnx(path: Path, seed: int = 0) -> None:
    """campplus.onnx stand-in: input (1, T, 80) fbank -> output (1, 192)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((80, 192)).astype(np.float32) * 0.1
    nodes = [
        helper.make_node("Mul", ["input", "input"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["m"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["m", "W"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "campplus_tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, "T", 80])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 192])],
        [numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def make_tokenizer_dir(root: Path, seed: int = 0) -> Path:
    """A Step-Audio-Tokenizer directory in the published layout."""
    make_paraformer_dir(root / PARAFORMER_SUBDIR, seed)
    rng = np.random.default_rng(seed)
    np.save(str(root / "linguistic_tokenizer.npy"), rng.standard_normal((1024, 16)).astype(np.float32))
    make_semantic_onnx(root / "speech_tokenizer_v1.onnx", seed)
    return root


def speech_like(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """Deterministic speech-like signal (harmonics with a moving pitch plus noise)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 2.1 * t) ** 2)
    return (0.3 * x + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def _byte_codec_config(d: Path) -> None:
    cfg = json.loads((d / "config.json").read_text(encoding="utf-8"))
    cfg["stepaudio_text_encoder"] = {"type": "bytes", "offset": BYTE_OFFSET}
    (d / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    (d / "tokenizer.model").write_bytes(b"placeholder: the byte codec named in config.json is used")


def make_chat_step1(dir_: Path, seed: int = 1) -> Step1ForCausalLM:
    """Tiny Step-Audio-Chat: a Step1 whose output layer only favours a-z, space, '.' and EOT."""
    model = make_step1(dir_, seed)
    allowed = [BYTE_OFFSET + b for b in b"abcdefghijklmnopqrstuvwxyz ."]
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = model.lm_head.weight
        keep = w[allowed].clone()
        w.zero_()
        w[allowed] = keep * 40.0
        w[EOT_ID] = torch.randn(w.shape[1], generator=g) * 0.05 * 20.0
    save_pretrained(model, dir_, max_shard_bytes=4_000_000)
    _byte_codec_config(dir_)
    return model.eval()


def make_cosy_dir(d: Path, seed: int) -> Path:
    """A CosyVoice-300M-25Hz directory with tiny flow, HiFT and CAM++ (sizes in model_config.json)."""
    make_flow(d / "flow.pt", seed)
    make_hift(d / "hift.pt", seed)
    make_campplus_onnx(d / "campplus.onnx", seed)
    (d / "cosyvoice.yaml").write_text("# tiny test config: sizes in model_config.json\n", encoding="utf-8")
    cfg = {"flow": dataclasses.asdict(tiny_flow_config()), "hift": dataclasses.asdict(tiny_hift_config())}
    (d / "model_config.json").write_text(json.dumps(cfg), encoding="utf-8")
    return d


def _write_wav(path: Path, audio: np.ndarray, rate: int) -> None:
    import wave

    pcm = (np.clip(np.asarray(audio, np.float32), -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def make_tiny_store(root: Path | str, voice: tuple[np.ndarray, int, str] | None = None) -> Path:
    """Write a complete tiny models store (layout in the module docstring). ``voice`` = (audio, rate, transcript)
    of the voice prompt; default a speech-like signal. Returns ``root``."""
    from models.stepaudio.probe import reference_probe

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    make_tokenizer_dir(root / "Step-Audio-Tokenizer")
    chat = root / "Step-Audio-Chat"
    reference_probe(make_chat_step1(chat)).save(chat / "step1_probe.npz")
    tts = root / "Step-Audio-TTS-3B"
    reference_probe(make_step1(tts)).save(tts / "step1_probe.npz")
    _byte_codec_config(tts)
    make_cosy_dir(tts / "CosyVoice-300M-25Hz", 0)
    make_cosy_dir(tts / "CosyVoice-300M-25Hz-Music", 1)
    audio, rate, text = voice or (speech_like(2.5, 16000, 7), 16000, VOICE_TEXT)
    voices = root / "voices"
    voices.mkdir(exist_ok=True)
    for name in ("joe", "joeRAP"):
        _write_wav(voices / f"{name}.wav", audio, rate)
        (voices / f"{name}.txt").write_text(text, encoding="utf-8")
    return root
