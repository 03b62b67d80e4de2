"""The browser page served by the HTTP API, in headless Chromium (Debian's package) with a fake microphone playing
a WAV file: it captures the question with an AudioWorklet, streams it over /v1/realtime, shows the transcript and
the reply, and plays the reply audio as it streams."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from speech_match import says
from test_http_api import HttpServer

from services.httpapi.settings import HttpApiSettings
from services.kit.audio import read_wav, write_wav
from stepaudio.stack import Stack, free_port

DATA = Path(__file__).parents[1] / "data"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def page_url(stack: Stack) -> Iterator[str]:
    server = HttpServer(HttpApiSettings(port=free_port(), tokenizer_addr=stack.addr("tokenizer"),
                                        tts_addr=stack.addr("tts"), gateway_addr=stack.gateway_addr, log_json=False))
    yield server.url + "/"
    server.stop()


def test_the_page_hears_the_microphone_and_plays_the_reply(page_url: str, tmp_path: Path) -> None:
    if not Path(CHROMIUM).is_file():
        pytest.fail("chromium is missing: apt-get install chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    audio, rate = read_wav(DATA / "question.wav")
    mic = tmp_path / "mic.wav"  # Chromium loops the file: the question, then 6 s of silence for the reply
    write_wav(mic, np.concatenate([np.zeros(rate // 2, np.float32), audio, np.zeros(rate * 6, np.float32)]), rate)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={mic}", "--autoplay-policy=no-user-gesture-required"])
        try:
            page = browser.new_page()
            page.goto(page_url)
            page.click("#talk")
            page.wait_for_function("window.stepaudioStats.turns.length >= 1 && window.stepaudioStats.playedMs > 500",
                                   timeout=120_000)
            stats = page.evaluate("window.stepaudioStats")
            transcript = page.inner_text("#turns .user")
            reply = page.inner_text("#turns .bot")
            page.screenshot(path=os.environ.get("STEPAUDIO_BROWSER_SCREENSHOT") or str(tmp_path / "browser.png"))
            ttfa = page.inner_text("#ttfa")
        finally:
            browser.close()
    assert not stats["errors"], stats["errors"]
    assert says(transcript, (DATA / "question.txt").read_text().strip()), transcript
    assert reply.strip() and stats["turns"][0]["status"] == "completed"
    assert stats["audioChunks"] > 0 and stats["playedMs"] > 500  # the reply was heard through the page
    assert ttfa.endswith("ms") and stats["ttfaMs"] is not None
