"""A real kube-apiserver (built by scripts/install-tools.sh into .cache/bin) backed by etcd (apt etcd-server),
started on free loopback ports for tests. No controller-manager, scheduler or kubelet run: objects are stored
and validated by the real API server, but nothing reconciles them (tests patch status subresources themselves).
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "admin-token-for-tests"
ONCALL_TOKEN = "oncall-token-for-tests"


def binaries() -> tuple[str | None, str | None]:
    api = os.environ.get("KUBE_APISERVER") or str(ROOT / ".cache" / "bin" / "kube-apiserver")
    api = api if Path(api).is_file() else shutil.which("kube-apiserver")
    etcd = os.environ.get("ETCD") or shutil.which("etcd")
    return api, etcd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ApiServer:
    url: str
    workdir: Path
    procs: list[subprocess.Popen[bytes]]

    def kubeconfig(self, token: str = ADMIN_TOKEN, name: str = "admin") -> Path:
        path = self.workdir / f"kubeconfig-{name}"
        path.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters: [{{name: test, cluster: {{server: '{self.url}', insecure-skip-tls-verify: true}}}}]\n"
            f"users: [{{name: {name}, user: {{token: {token}}}}}]\n"
            f"contexts: [{{name: test, context: {{cluster: test, user: {name}}}}}]\n"
            "current-context: test\n"
        )
        return path

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start(timeout: float = 90.0) -> ApiServer:
    api, etcd = binaries()
    if not api or not etcd:
        raise FileNotFoundError(f"kube-apiserver={api} etcd={etcd}")
    work = Path(tempfile.mkdtemp(prefix="kapi-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        cport, pport = _free_port(), _free_port()
        procs.append(subprocess.Popen(
            [etcd, "--data-dir", str(work / "etcd"), "--listen-client-urls", f"http://127.0.0.1:{cport}",
             "--advertise-client-urls", f"http://127.0.0.1:{cport}", "--listen-peer-urls",
             f"http://127.0.0.1:{pport}", "--log-level", "error"],
            stdout=open(work / "etcd.log", "wb"), stderr=subprocess.STDOUT))
        subprocess.run(["openssl", "genrsa", "-out", str(work / "sa.key"), "2048"], check=True, capture_output=True)
        (work / "tokens.csv").write_text(
            f'{ADMIN_TOKEN},admin,1,"system:masters"\n{ONCALL_TOKEN},oncall,2,"stepaudio-oncall"\n')
        port = _free_port()
        procs.append(subprocess.Popen(
            [api, f"--etcd-servers=http://127.0.0.1:{cport}", "--bind-address=127.0.0.1", f"--secure-port={port}",
             f"--cert-dir={work / 'certs'}", f"--token-auth-file={work / 'tokens.csv'}",
             "--authorization-mode=RBAC", f"--service-account-key-file={work / 'sa.key'}",
             f"--service-account-signing-key-file={work / 'sa.key'}",
             "--service-account-issuer=https://kubernetes.default.svc", "--service-cluster-ip-range=10.96.0.0/16",
             "--disable-admission-plugins=ServiceAccount", "--enable-priority-and-fairness=false",
             "--advertise-address=127.0.0.1", "--v=0"],
            stdout=open(work / "apiserver.log", "wb"), stderr=subprocess.STDOUT))
        url = f"https://127.0.0.1:{port}"
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        deadline = time.monotonic() + timeout
        while True:
            if procs[-1].poll() is not None:
                raise RuntimeError("kube-apiserver exited:\n" + (work / "apiserver.log").read_text()[-3000:])
            try:
                req = urllib.request.Request(url + "/readyz", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
                if urllib.request.urlopen(req, context=ctx, timeout=2).status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("kube-apiserver not ready:\n" + (work / "apiserver.log").read_text()[-3000:])
            time.sleep(0.5)
        return ApiServer(url=url, workdir=work, procs=procs)
    except BaseException:
        ApiServer("", work, procs).stop()
        raise
