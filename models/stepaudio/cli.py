"""``models`` CLI subcommands ``models fetch [DEST]`` and ``models verify DIR``; see :func:`register`."""

from __future__ import annotations

import argparse
import sys

from models.stepaudio import store


def _cmd_verify(args: argparse.Namespace) -> int:
    problems = store.verify(args.dir, service=args.service, check_sizes=args.check_sizes)
    for p in problems:
        print(p, file=sys.stderr)
    if not problems:
        print(f"{args.dir}: all artifacts for {args.service or 'all services'} present")
    return 1 if problems else 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    for d in store.fetch(args.dest, service=args.service):
        print(d)
    return 0


def _cmd_make_tiny(args: argparse.Namespace) -> int:
    from models.stepaudio.tiny import make_tiny_store

    root = make_tiny_store(args.dir)
    problems = [p for svc in store.SERVICES for p in store.verify(root, service=svc)]
    for p in problems:
        print(p, file=sys.stderr)
    print(f"{root}: tiny Step-Audio store (random weights, real layouts); try: stepaudio up --profile stepaudio "
          f"--model-dir {root}")
    return 1 if problems else 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``models`` with ``fetch`` and ``verify`` to an argparse subparsers object.

    Each leaf parser sets ``func`` (args -> exit code) via ``set_defaults``.
    """
    models = subparsers.add_parser("models", help="manage Step-Audio model artifacts")
    sub = models.add_subparsers(dest="models_command", required=True)
    f = sub.add_parser("fetch", help="download Step-Audio checkpoints from the Hugging Face hub")
    f.add_argument("dest", nargs="?", default="models-data", help="destination directory")
    f.add_argument("--service", choices=store.SERVICES, default=None, help="only what this service needs")
    f.set_defaults(func=_cmd_fetch)
    v = sub.add_parser("verify", help="check that a models directory holds every needed file")
    v.add_argument("dir", help="models directory")
    v.add_argument("--service", choices=store.SERVICES, default=None, help="only what this service needs")
    v.add_argument("--check-sizes", action="store_true", help="also flag files far smaller than expected")
    v.set_defaults(func=_cmd_verify)
    t = sub.add_parser("make-tiny", help="write a complete tiny Step-Audio store (random weights, real layouts)")
    t.add_argument("dir", help="destination directory")
    t.set_defaults(func=_cmd_make_tiny)
    return models


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry: ``python -m models.stepaudio.cli models verify DIR``."""
    parser = argparse.ArgumentParser(prog="stepaudio-models")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
