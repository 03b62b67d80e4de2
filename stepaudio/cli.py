"""``stepaudio`` command line: up, down, chat, demo, health, and the models/ops groups."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUN_DIR = REPO_ROOT / ".run"


def _print_result(result: object, out: Path | None) -> int:
    from stepaudio.client import SessionResult, write_wav

    assert isinstance(result, SessionResult)
    for err in result.errors:
        print(f"error: {err.code}: {err.message}", file=sys.stderr)
    turn = result.last
    print(f"session:  {result.session_id}")
    print(f"heard:    {turn.transcript!r}")
    for call in turn.tool_calls:
        print(f"tool:     {call.name} -> {call.result_json or call.error}")
    print(f"answered: {turn.reply_text.strip()!r}")
    seconds = len(turn.audio) / 2 / result.sample_rate_hz
    print(f"audio:    {seconds:.2f} s at {result.sample_rate_hz} Hz")
    for name, ms in turn.timings.items():
        print(f"  {name:<24}{ms:8.0f} ms")
    if out is not None and turn.audio:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_wav(out, bytes(turn.audio), result.sample_rate_hz)
        print(f"reply written to {out}")
    return 0 if turn.audio else 1


def cmd_up(args: argparse.Namespace) -> int:
    from stepaudio.stack import Stack

    stack = Stack(run_dir=Path(args.run_dir), otlp_endpoint=args.otlp_endpoint, profile=args.profile,
                  model_dir=Path(args.model_dir) if args.model_dir else None)
    if args.profile == "stepaudio" and not args.model_dir:
        print("--profile stepaudio needs --model-dir DIR (`stepaudio models make-tiny DIR` writes a tiny one)",
              file=sys.stderr)
        return 2
    t0 = time.monotonic()
    stack.start(timeout=args.timeout, fixed_ports=not args.random_ports)
    print(f"all services healthy in {time.monotonic() - t0:.1f} s; gateway at {stack.gateway_addr}")
    for name, port in stack.ports.items():
        print(f"  {name:<10} 127.0.0.1:{port}")
    print(f"  {'triton':<10} grpc 127.0.0.1:{stack.triton_ports['grpc']} metrics "
          f"http://127.0.0.1:{stack.triton_ports['metrics']}/metrics")
    print(f"  {'http api':<10} {stack.http_url}/v1 (OpenAI-style: audio/transcriptions, audio/speech, models)")
    print(f"logs in {stack.run_dir / 'logs'}; stop with: stepaudio down")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from stepaudio.stack import stop_saved

    stopped = stop_saved(Path(args.run_dir))
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def _gateway_addr(args: argparse.Namespace) -> str:
    if args.addr:
        return str(args.addr)
    state = Path(args.run_dir) / "stack.json"
    if state.exists():
        return f"127.0.0.1:{json.loads(state.read_text())['ports']['gateway']}"
    return "127.0.0.1:50051"


def cmd_chat_mic(args: argparse.Namespace) -> int:
    """Talk through the microphone (sounddevice/PortAudio); replies play on the default output; Ctrl-C ends."""
    try:
        import sounddevice as sd
    except (ImportError, OSError) as e:
        print(f"--mic needs the sounddevice package and PortAudio ({e}): pip install sounddevice", file=sys.stderr)
        return 2
    try:
        sd.check_input_settings(samplerate=16000, channels=1, dtype="int16")
    except Exception as e:  # noqa: BLE001 - no microphone here
        print(f"no usable microphone: {e}", file=sys.stderr)
        return 2
    from stepaudio.client import AudioEvent, Conversation, ErrorEvent, TranscriptEvent, TurnDone, session_config

    async def talk() -> None:
        import grpc

        loop = asyncio.get_running_loop()
        async with grpc.aio.insecure_channel(_gateway_addr(args)) as ch:
            conv = Conversation(ch, session_config(16000, voice=args.voice,
                                                   allowed_tools=args.tools.split(",") if args.tools else ["*"]))
            out = sd.RawOutputStream(samplerate=22050, channels=1, dtype="int16")
            out.start()

            def on_mic(data: bytes, frames: int, t: object, status: object) -> None:
                loop.call_soon_threadsafe(conv.send_audio, bytes(data))

            with sd.RawInputStream(samplerate=16000, channels=1, dtype="int16", blocksize=320, callback=on_mic):
                print("listening (Ctrl-C to stop)")
                async for ev in conv.events():
                    if isinstance(ev, TranscriptEvent) and ev.final:
                        print(f"you: {ev.text}")
                    elif isinstance(ev, AudioEvent):
                        await asyncio.to_thread(out.write, ev.pcm)
                    elif isinstance(ev, TurnDone):
                        print(f"bot: {ev.reply_text}  ({ev.timings.get('time_to_first_audio', 0):.0f} ms)")
                    elif isinstance(ev, ErrorEvent):
                        print(f"error {ev.code}: {ev.message}", file=sys.stderr)

    try:
        asyncio.run(talk())
    except KeyboardInterrupt:
        pass
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from stepaudio.client import converse_file

    if args.mic:
        return cmd_chat_mic(args)
    if args.synthetic:
        args.wav = str(REPO_ROOT / "tests" / "data" / "question.wav")
    if not args.wav:
        print("chat needs --wav FILE (or --synthetic)", file=sys.stderr)
        return 2
    tools = args.tools.split(",") if args.tools else ["*"]
    result = asyncio.run(converse_file(_gateway_addr(args), args.wav, realtime=args.realtime, voice=args.voice,
                                       allowed_tools=tools))
    return _print_result(result, Path(args.out) if args.out else None)


def cmd_demo(args: argparse.Namespace) -> int:
    from stepaudio.client import converse_file
    from stepaudio.stack import Stack

    wav = Path(args.wav)
    words = wav.with_suffix(".txt")
    print(f"question: {wav}" + (f" ({words.read_text().strip()!r})" if words.exists() else ""))
    stack = Stack(run_dir=Path(args.run_dir))
    t0 = time.monotonic()
    print("starting tritonserver and the services (vad, tokenizer, llm, tools, tts, vocoder, gateway)...")
    stack.start(timeout=args.timeout)
    print(f"all services healthy in {time.monotonic() - t0:.1f} s")
    try:
        result = asyncio.run(converse_file(stack.gateway_addr, wav, realtime=True, allowed_tools=["*"]))
        return _print_result(result, Path(args.out))
    finally:
        if not args.keep:
            stack.stop()
        else:
            print("services keep running; stop them with: stepaudio down")


def cmd_health(args: argparse.Namespace) -> int:
    from stepaudio.stack import wait_healthy

    try:
        wait_healthy(_gateway_addr(args), args.timeout)
    except (TimeoutError, RuntimeError) as e:
        print(f"unhealthy: {e}", file=sys.stderr)
        return 1
    print("SERVING")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="stepaudio", description="Step-Audio serving platform")
    ap.add_argument("--run-dir", default=str(DEFAULT_RUN_DIR), help="where local processes keep logs and state")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("up", help="start Triton and every service locally")
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--otlp-endpoint", default="", help="send traces and metrics to this OTLP/gRPC endpoint")
    p.add_argument("--random-ports", action="store_true", help="pick free ports instead of 50051-50057/8000-8002")
    p.add_argument("--profile", choices=("embedded", "stepaudio"), default="embedded",
                   help="embedded: small CPU models from packages; stepaudio: Step-Audio checkpoints from --model-dir "
                        "(both Step1 models on Triton)")
    p.add_argument("--model-dir", default="", help="stepaudio profile: the models folder (stepaudio models fetch / "
                                                   "make-tiny layout)")
    p.set_defaults(fn=cmd_up)

    p = sub.add_parser("down", help="stop what `up` started")
    p.set_defaults(fn=cmd_down)

    p = sub.add_parser("chat", help="send a spoken question (WAV) and save the spoken reply")
    p.add_argument("--wav", help="16-bit PCM WAV, mono, 8/16/22.05/24/44.1/48 kHz")
    p.add_argument("--out", help="write the reply audio here")
    p.add_argument("--addr", help="gateway host:port (default: the local stack)")
    p.add_argument("--voice", default="")
    p.add_argument("--tools", default="", help="comma-separated tools the model may call (default: all)")
    p.add_argument("--realtime", action="store_true", help="stream at real-time pace (as a microphone would)")
    p.add_argument("--synthetic", action="store_true", help="use the bundled question (helm test)")
    p.add_argument("--mic", action="store_true", help="talk through the microphone (needs sounddevice)")
    p.set_defaults(fn=cmd_chat)

    p = sub.add_parser("demo", help="start everything, ask the bundled question, print and save the answer")
    p.add_argument("--wav", default=str(REPO_ROOT / "tests" / "data" / "question.wav"))
    p.add_argument("--out", default=str(REPO_ROOT / "out" / "reply.wav"))
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--keep", action="store_true", help="leave the services running afterwards")
    p.set_defaults(fn=cmd_demo)

    p = sub.add_parser("health", help="exit 0 once the gateway reports SERVING")
    p.add_argument("--addr")
    p.add_argument("--timeout", type=float, default=30)
    p.set_defaults(fn=cmd_health)

    for module in ("models.stepaudio.cli", "stepaudio.ops"):
        try:
            mod = __import__(module, fromlist=["register"])
        except ImportError:
            continue
        register = getattr(mod, "register", None)
        if register is not None:
            register(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    fn = getattr(args, "fn", None) or args.func
    return int(fn(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
