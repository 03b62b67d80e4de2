"""`stepaudio chat --mic` without a microphone stack says what to install instead of failing obscurely."""

from __future__ import annotations

import sys

import pytest

from stepaudio.cli import build_parser


def test_mic_without_sounddevice(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import fails as on a machine without it
    args = build_parser().parse_args(["chat", "--mic"])
    assert args.fn(args) == 2
    assert "pip install sounddevice" in capsys.readouterr().err
