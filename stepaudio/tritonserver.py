"""Start a real Triton Inference Server from the `nvidia-pytriton` wheel (CPU or GPU machine).

The wheel bundles a tritonserver binary with the python backend. This module prepares a project-local copy of
that tree (`.cache/tritonserver`), puts the python backend stub for the running Python version in place, sets the
library/binary search paths the stub needs, starts the server with explicit model control, and waits until every
requested model is ready.

Library use::

    from stepaudio.tritonserver import start_triton

    with start_triton(models=["embedded_llm"]) as triton:      # or: async with start_triton(...)
        print(triton.grpc_url, triton.http_url, triton.metrics_url)

Command line (runs until SIGINT/SIGTERM)::

    python -m stepaudio.tritonserver --model-repository models/triton --models embedded_llm --grpc-port 8001
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

log = logging.getLogger("stepaudio.tritonserver")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_REPOSITORY = REPO_ROOT / "models" / "triton"
DEFAULT_CACHE_DIR = REPO_ROOT / ".cache" / "tritonserver"


class TritonStartError(RuntimeError):
    """tritonserver exited or did not get its models ready in time."""


def _site_packages() -> Path:
    import pytriton  # noqa: PLC0415  (import only to locate the wheel)

    return Path(pytriton.__file__).resolve().parent.parent


def _wheel_tree() -> Path:
    tree = _site_packages() / "pytriton" / "tritonserver"
    if not (tree / "bin" / "tritonserver").exists():
        raise TritonStartError(f"no tritonserver binary in {tree}: pip install -e '.[embedded]' (nvidia-pytriton)")
    return tree


def prepare_tree(cache_dir: Path | str | None = None) -> Path:
    """Copy the wheel's tritonserver tree into `cache_dir` (once) and install the python backend stub.

    Returns the tree root (with bin/tritonserver, backends/, caches/). Idempotent and safe to call again.
    """
    dest = Path(cache_dir) if cache_dir else DEFAULT_CACHE_DIR
    src = _wheel_tree()
    marker = dest / ".prepared.json"
    pyver = f"{sys.version_info.major}.{sys.version_info.minor}"
    stamp = {"source": str(src), "source_mtime": (src / "bin" / "tritonserver").stat().st_mtime, "python": pyver}
    if marker.exists():
        with contextlib.suppress(ValueError, OSError):
            if (
                json.loads(marker.read_text()) == stamp
                and (dest / "backends/python/triton_python_backend_stub").exists()
            ):
                return dest
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    shutil.copytree(src, tmp, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    stub = tmp / "python_backend_stubs" / pyver / "triton_python_backend_stub"
    if not stub.exists():
        shutil.rmtree(tmp, ignore_errors=True)
        raise TritonStartError(f"nvidia-pytriton ships no python backend stub for Python {pyver} ({stub})")
    shutil.copy2(stub, tmp / "backends" / "python" / "triton_python_backend_stub")
    (tmp / "caches").mkdir(exist_ok=True)
    (tmp / ".prepared.json").write_text(json.dumps(stamp))
    if dest.exists():  # stale (other wheel or Python): move aside, a running server may still use it
        with contextlib.suppress(OSError):
            dest.rename(dest.with_name(f"{dest.name}.old-{int(time.time())}-{os.getpid()}"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(dest)
    except OSError:  # another process won the race: use its tree
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def server_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for tritonserver and its python backend stub.

    * LD_LIBRARY_PATH: the running Python's lib dir (else the stub loads the system libpython and models fail with
      `'_thread.RLock' object has no attribute '_recursion_count'`) + the wheel's bundled libs (else the server exits).
    * PATH: this venv's bin first: the stub ignores PYTHONPATH and finds packages through the `python` on PATH.
    """
    env = dict(os.environ if base is None else base)
    libdir = sysconfig.get_config_var("LIBDIR") or str(Path(sys.base_prefix) / "lib")
    libs = [libdir, str(_site_packages() / "nvidia_pytriton.libs")]
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = ":".join(libs)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + (":" + env["PATH"] if env.get("PATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM tritonserver when the launching process dies (Linux), so a killed
    launcher or test run never leaves an orphan server holding ports and shared memory."""
    try:
        import ctypes  # noqa: PLC0415

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now (tritonserver does not accept port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _http_get(url: str, timeout: float = 1.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (local URL)
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


@dataclass
class TritonHandle:
    """A running tritonserver started by `start_triton` (context manager, sync and async)."""

    process: subprocess.Popen[bytes]
    grpc_port: int
    http_port: int
    metrics_port: int
    models: tuple[str, ...]
    log_path: Path
    host: str = "127.0.0.1"
    _log_file: Any = field(default=None, repr=False)

    @property
    def grpc_url(self) -> str:
        """host:port for tritonclient.grpc."""
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def is_ready(self) -> bool:
        try:
            if _http_get(f"{self.http_url}/v2/health/ready") != 200:
                return False
            return all(_http_get(f"{self.http_url}/v2/models/{m}/ready") == 200 for m in self.models)
        except OSError:
            return False

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise TritonStartError(
                    f"tritonserver exited with code {self.process.returncode}; log {self.log_path}:\n{self.log_tail()}"
                )
            if self.is_ready():
                return
            time.sleep(0.1)
        raise TritonStartError(f"models {list(self.models)} not ready after {timeout:.0f} s; log:\n{self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (Triton unloads models and exits), SIGKILL after `timeout`. Returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return self.process.returncode

    def __enter__(self) -> TritonHandle:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> TritonHandle:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        import asyncio  # noqa: PLC0415

        await asyncio.to_thread(self.stop)


def build_command(
    tree: Path,
    model_repository: Path,
    models: Sequence[str],
    grpc_port: int,
    http_port: int,
    metrics_port: int,
    host: str = "127.0.0.1",
    log_verbose: int = 0,
    extra_args: Iterable[str] = (),
) -> list[str]:
    cmd = [
        str(tree / "bin" / "tritonserver"),
        f"--model-repository={model_repository}",
        f"--backend-directory={tree / 'backends'}",
        f"--cache-directory={tree / 'caches'}",
        "--model-control-mode=explicit",
        *(f"--load-model={m}" for m in models),
        "--strict-readiness=true",
        "--exit-on-error=true",
        f"--http-address={host}",
        f"--grpc-address={host}",
        f"--metrics-address={host}",
        f"--grpc-port={grpc_port}",
        f"--http-port={http_port}",
        f"--metrics-port={metrics_port}",
        "--allow-metrics=true",
        # Unique shared-memory names so several servers (tests, other engineers) can run side by side.
        f"--backend-config=python,shm-region-prefix-name=stepaudio_{os.getpid()}_{uuid.uuid4().hex[:8]}_",
        f"--log-verbose={log_verbose}",
        *extra_args,
    ]
    return cmd


def start_triton(
    model_repository: Path | str = DEFAULT_MODEL_REPOSITORY,
    models: Sequence[str] = ("embedded_llm",),
    grpc_port: int | None = None,
    http_port: int | None = None,
    metrics_port: int | None = None,
    host: str = "127.0.0.1",
    cache_dir: Path | str | None = None,
    log_path: Path | str | None = None,
    ready_timeout: float = 180.0,
    extra_args: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    log_verbose: int = 0,
    attempts: int = 3,
) -> TritonHandle:
    """Start tritonserver and block until `models` are ready. Ports left None (or 0) are picked free.

    `env` entries are added to the server environment (model.py reads e.g. STEPAUDIO_TRITON_* there).
    Raises TritonStartError with the log tail if the server exits or is not ready in `ready_timeout` seconds.
    """
    tree = prepare_tree(cache_dir)
    repo = Path(model_repository).resolve()
    if not repo.is_dir():
        raise TritonStartError(f"model repository {repo} does not exist")
    for m in models:
        if not (repo / m / "config.pbtxt").exists():
            raise TritonStartError(f"model {m!r} has no config.pbtxt in {repo}")
    full_env = server_env()
    if env:
        full_env.update(env)
    logs_dir = tree / "logs"
    logs_dir.mkdir(exist_ok=True)
    last_error: TritonStartError | None = None
    for attempt in range(attempts):
        gp = grpc_port or free_port(host)
        hp = http_port or free_port(host)
        mp = metrics_port or free_port(host)
        lp = Path(log_path) if log_path else logs_dir / f"tritonserver-{gp}.log"
        lp.parent.mkdir(parents=True, exist_ok=True)
        lf = open(lp, "ab")  # noqa: SIM115 (closed by TritonHandle.stop)
        cmd = build_command(tree, repo, models, gp, hp, mp, host, log_verbose, extra_args)
        log.info("starting tritonserver: %s (log %s)", " ".join(cmd), lp)
        proc = subprocess.Popen(
            cmd, env=full_env, stdout=lf, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent
        )
        handle = TritonHandle(proc, gp, hp, mp, tuple(models), lp, host, lf)
        try:
            handle.wait_ready(ready_timeout)
            log.info(
                "tritonserver ready: grpc %s http %s metrics %s", handle.grpc_url, handle.http_url, handle.metrics_url
            )
            return handle
        except TritonStartError as e:
            handle.stop()
            last_error = e
            port_clash = "Address already in use" in handle.log_tail(200) or "address in use" in handle.log_tail(200)
            explicit_ports = grpc_port and http_port and metrics_port
            if not port_clash or explicit_ports or attempt == attempts - 1:
                raise
            log.warning("port clash, retrying with other ports (attempt %d)", attempt + 2)
    assert last_error is not None
    raise last_error


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stepaudio.tritonserver", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-repository", default=str(DEFAULT_MODEL_REPOSITORY))
    ap.add_argument("--models", nargs="+", default=["embedded_llm"], help="models to load (explicit model control)")
    ap.add_argument("--host", default=os.environ.get("STEPAUDIO_TRITON_HOST", "127.0.0.1"))
    ap.add_argument("--grpc-port", type=int, default=int(os.environ.get("STEPAUDIO_TRITON_GRPC_PORT", "8001")))
    ap.add_argument("--http-port", type=int, default=int(os.environ.get("STEPAUDIO_TRITON_HTTP_PORT", "8000")))
    ap.add_argument("--metrics-port", type=int, default=int(os.environ.get("STEPAUDIO_TRITON_METRICS_PORT", "8002")))
    ap.add_argument(
        "--cache-dir", default=None, help=f"where the server tree is prepared (default {DEFAULT_CACHE_DIR})"
    )
    ap.add_argument("--log-file", default=None)
    ap.add_argument("--ready-timeout", type=float, default=300.0)
    ap.add_argument("--log-verbose", type=int, default=0)
    ap.add_argument("--prepare-only", action="store_true", help="prepare the tree and print its path")
    ap.add_argument("extra", nargs=argparse.REMAINDER, help="after --: extra tritonserver flags")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if a.prepare_only:
        print(prepare_tree(a.cache_dir))
        return 0
    extra = [x for x in a.extra if x != "--"]
    handle = start_triton(
        a.model_repository,
        a.models,
        a.grpc_port or None,
        a.http_port or None,
        a.metrics_port or None,
        a.host,
        a.cache_dir,
        a.log_file,
        a.ready_timeout,
        extra,
        log_verbose=a.log_verbose,
    )
    print(
        json.dumps(
            {
                "grpc_url": handle.grpc_url,
                "http_url": handle.http_url,
                "metrics_url": handle.metrics_url,
                "pid": handle.pid,
                "log": str(handle.log_path),
            }
        ),
        flush=True,
    )
    stop = False

    def _on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        while not stop and handle.alive():
            time.sleep(0.5)
    finally:
        code = handle.stop()
    return 0 if stop else (code or 1)


if __name__ == "__main__":
    sys.exit(main())
