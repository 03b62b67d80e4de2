"""Run the whole platform locally: Triton plus every service as its own process (``stepaudio up`` / tests).

Each process gets its port and the addresses of its peers through its ``STEPAUDIO_<NAME>_*`` environment,
writes its log to ``<run_dir>/logs/<name>.log``, and is recorded in ``<run_dir>/stack.json`` so
``stepaudio down`` can stop it. ``start`` returns once every service answers grpc.health.v1 SERVING.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parents[1]

#: Start order: stages first, the gateway last (its warm-up reads the tool and voice catalogs).
SERVICES = ("vad", "tokenizer", "llm", "tools", "tts", "vocoder", "gateway")
DEFAULT_PORTS = {"gateway": 50051, "vad": 50052, "tokenizer": 50053, "llm": 50054, "tools": 50055, "tts": 50056,
                 "vocoder": 50057}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(addr: str, timeout: float, proc: subprocess.Popen | None = None, name: str = "") -> None:
    """Block until ``addr`` reports SERVING for the overall server ("")."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(addr) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{name or addr} exited with code {proc.returncode} during start-up")
            try:
                resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise TimeoutError(f"{name or addr} not SERVING after {timeout:.0f} s")


@dataclass
class Stack:
    """The local platform: Triton + services, each a process."""

    run_dir: Path = field(default_factory=lambda: REPO_ROOT / ".run")
    ports: dict[str, int] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)
    triton_ports: dict[str, int] = field(default_factory=dict)
    otlp_endpoint: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)
    #: embedded (small CPU models from packages) or stepaudio (Step-Audio checkpoints from ``model_dir``, both
    #: Step1 models on Triton; the torch Step1 model serves them on CPU, e.g. a ``stepaudio models make-tiny`` store)
    profile: str = "embedded"
    model_dir: Path | None = None
    http_port: int = 0  # the OpenAI-style HTTP API; 0: 8080 with fixed ports, else a free one
    #: extra tritonserver flags (e.g. --trace-config=... in tests)
    triton_args: list[str] = field(default_factory=list)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def gateway_addr(self) -> str:
        return f"127.0.0.1:{self.ports['gateway']}"

    def addr(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def _env(self, name: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
        prefix = f"STEPAUDIO_{name.upper()}_"
        if name in self.ports:
            env[prefix + "PORT"] = str(self.ports[name])
            env[prefix + "HOST"] = "127.0.0.1"
            env[prefix + "METRICS_PORT"] = str(self.metrics_ports.setdefault(name, free_port()))
        if self.otlp_endpoint:
            env[prefix + "OTLP_ENDPOINT"] = self.otlp_endpoint
        if name in SERVICES:
            env[prefix + "PROFILE"] = self.profile
        if self.profile == "stepaudio" and name in SERVICES:
            env.update(self._stepaudio_env(name, prefix))
        if name == "llm":
            env[prefix + "TRITON_URLS"] = f"127.0.0.1:{self.triton_ports['grpc']}"
        if name == "tokenizer":
            env.setdefault(prefix + "MODEL_THREADS", "2")
        if name == "tools":
            env.setdefault(prefix + "ENABLE_DIAGNOSTIC_TOOLS", "true")  # the local stack exercises slow tools
        if name == "httpapi":
            env.update({prefix + "PORT": str(self.http_port), prefix + "HOST": "127.0.0.1",
                        prefix + "TOKENIZER_ADDR": self.addr("tokenizer"), prefix + "TTS_ADDR": self.addr("tts"),
                        prefix + "GATEWAY_ADDR": self.gateway_addr})
        if name == "gateway":
            for peer in ("vad", "tokenizer", "llm", "tools", "tts"):
                env[f"{prefix}{peer.upper()}_ADDR"] = self.addr(peer)
            env.setdefault("STEPAUDIO_CONVLOG_SPOOL_DIR", str(self.run_dir / "convlog" / "spool"))
            env.setdefault("STEPAUDIO_CONVLOG_AUDIO_DIR", str(self.run_dir / "convlog" / "audio"))
        env.update(self.extra_env)
        return env

    def _stepaudio_env(self, name: str, prefix: str) -> dict[str, str]:
        root = str(self.model_dir)
        triton = f"127.0.0.1:{self.triton_ports['grpc']}"
        return {
            "tokenizer": {prefix + "MODEL_DIR": f"{root}/Step-Audio-Tokenizer"},
            "tts": {prefix + "MODEL_DIR": root, prefix + "LM_BACKEND": "triton", prefix + "TRITON_URLS": triton,
                    prefix + "DEVICE": "cpu"},
            "gateway": {prefix + "LLM_INPUT": "audio_tokens"},
        }.get(name, {})

    @property
    def services(self) -> tuple[str, ...]:
        """Processes of this profile, in start order (HiFT runs inside TTS: no separate vocoder here)."""
        return tuple(n for n in SERVICES if not (n == "vocoder" and self.profile == "stepaudio"))

    @property
    def triton_models(self) -> list[str]:
        return ["step_audio_chat", "step_audio_tts"] if self.profile == "stepaudio" else ["embedded_llm"]

    def _triton_repository(self) -> Path:
        """embedded: models/triton. stepaudio: both Step1 models on the torch Triton model, generated for
        ``model_dir`` into the run folder."""
        if self.profile != "stepaudio":
            return REPO_ROOT / "models" / "triton"
        if self.model_dir is None:
            raise ValueError("the stepaudio profile needs a models folder (--model-dir; `stepaudio models make-tiny "
                             "DIR` writes a tiny one)")
        from models.stepaudio import store
        from models.trtllm.make_repo import make_torch_model

        problems = [p for svc in ("tokenizer", "llm", "tts") for p in store.verify(self.model_dir, service=svc)]
        if problems:
            raise FileNotFoundError(f"{self.model_dir} is not a complete models folder: " + "; ".join(problems[:5]))
        repo = self.run_dir / "triton-repository"
        for profile, sub in (("chat", "Step-Audio-Chat"), ("tts", "Step-Audio-TTS-3B")):
            make_torch_model(profile, repo, {"checkpoint_dir": str(Path(self.model_dir).resolve() / sub),
                                             "device": "cpu", "threads": "1"})
        return repo

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        logs = self.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child process
        proc = subprocess.Popen([sys.executable, *args], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc

    def start(self, timeout: float = 300.0, fixed_ports: bool = False) -> Stack:
        """Start Triton and every service; wait until all are healthy. Stops what it started on failure."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for name in self.services:
            self.ports.setdefault(name, DEFAULT_PORTS[name] if fixed_ports else free_port())
        self.http_port = self.http_port or (8080 if fixed_ports else free_port())
        for kind, default in (("grpc", 8001), ("http", 8000), ("metrics", 8002)):
            self.triton_ports.setdefault(kind, default if fixed_ports else free_port())
        try:
            env = self._env("triton")
            triton = self._spawn("triton", [
                "-m", "stepaudio.tritonserver", "--model-repository", str(self._triton_repository()),
                "--models", *self.triton_models,
                "--grpc-port", str(self.triton_ports["grpc"]), "--http-port", str(self.triton_ports["http"]),
                "--metrics-port", str(self.triton_ports["metrics"]), *(["--", *self.triton_args] if self.triton_args
                                                                        else [])], env)
            for name in self.services:
                if name == "gateway":
                    continue
                self._spawn(name, ["-m", f"services.{name}"], self._env(name))
            self._wait_triton(triton, timeout)
            for name in self.services:
                if name == "gateway":
                    continue
                wait_healthy(self.addr(name), timeout, self.procs[name], name)
            self._spawn("gateway", ["-m", "services.gateway"], self._env("gateway"))
            wait_healthy(self.gateway_addr, timeout, self.procs["gateway"], "gateway")
            self._spawn("httpapi", ["-m", "services.httpapi"], self._env("httpapi"))
            self._wait_http(timeout)
        except BaseException:
            self.stop()
            raise
        self.save()
        return self

    @property
    def http_url(self) -> str:
        """The OpenAI-style HTTP API (services/httpapi)."""
        return f"http://127.0.0.1:{self.http_port}"

    def _wait_http(self, timeout: float) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs["httpapi"].poll() is not None:
                raise RuntimeError(f"the HTTP API exited; see {self.run_dir}/logs/httpapi.log")
            try:
                with urllib.request.urlopen(self.http_url + "/healthz", timeout=1) as r:  # noqa: S310 - local URL
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError("the HTTP API did not answer /healthz")

    def _wait_triton(self, proc: subprocess.Popen, timeout: float) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        waiting = list(self.triton_models)
        while time.monotonic() < deadline and waiting:
            if proc.poll() is not None:
                raise RuntimeError(f"tritonserver exited with code {proc.returncode}; see {self.run_dir}/logs")
            url = f"http://127.0.0.1:{self.triton_ports['http']}/v2/models/{waiting[0]}/ready"
            try:
                with urllib.request.urlopen(url, timeout=1) as r:  # noqa: S310 - local URL
                    if r.status == 200:
                        waiting.pop(0)
                        continue
            except OSError:
                pass
            time.sleep(0.3)
        if waiting:
            raise TimeoutError(f"tritonserver models {waiting} not ready; see {self.run_dir}/logs/triton.log")

    def save(self) -> None:
        state = {"ports": self.ports, "metrics_ports": self.metrics_ports, "triton_ports": self.triton_ports,
                 "http_port": self.http_port,
                 "pids": {n: p.pid for n, p in self.procs.items()}}
        (self.run_dir / "stack.json").write_text(json.dumps(state, indent=2))

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM every process (gateway first, so it drains), then SIGKILL what is left after ``grace``."""
        order = ["gateway", *[n for n in self.procs if n != "gateway"]]
        for name in order:
            p = self.procs.get(name)
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in self.procs.values():
            try:
                p.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.procs.clear()
        state = self.run_dir / "stack.json"
        if state.exists():
            state.unlink()

    def spawn_gateway(self, name: str, env: dict[str, str]) -> str:
        """Start one more gateway process (other settings, same stages); returns its address."""
        port = free_port()
        full = self._env("gateway")
        full.update(env)
        full["STEPAUDIO_GATEWAY_PORT"] = str(port)
        full["STEPAUDIO_GATEWAY_METRICS_PORT"] = str(free_port())
        self._spawn(name, ["-m", "services.gateway"], full)
        return f"127.0.0.1:{port}"

    def restart(self, name: str, timeout: float = 120.0) -> None:
        """Stop one service and start it again on the same port (tests of restarts)."""
        p = self.procs.pop(name)
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(30)
        self._spawn(name, ["-m", f"services.{name}"], self._env(name))
        wait_healthy(self.addr(name), timeout, self.procs[name], name)


def stop_saved(run_dir: Path, grace: float = 15.0) -> list[str]:
    """Stop the processes recorded in ``run_dir/stack.json`` (``stepaudio down``)."""
    state = run_dir / "stack.json"
    if not state.exists():
        return []
    pids: dict[str, int] = json.loads(state.read_text())["pids"]
    stopped = []
    for name in ["gateway", *[n for n in pids if n != "gateway"]]:
        pid = pids.get(name)
        if pid is None:
            continue
        try:
            os.killpg(pid, signal.SIGTERM)
            stopped.append(name)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    for pid in pids.values():
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    state.unlink()
    return stopped
