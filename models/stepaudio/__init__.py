"""Torch/ONNX implementations of the Step-Audio components and their checkpoint loaders.

Submodules are imported lazily by callers (``from models.stepaudio.step1 import Step1ForCausalLM``) so that
``audio_tokens`` and ``store`` stay usable without torch installed.
"""
