"""Shared fixtures for the deployment tests: the real helm binary and rendered manifests.

helm comes from $HELM or .cache/bin/helm (scripts/install-tools.sh builds it); without it the chart tests skip
with that reason. Rendering is cached per values set so the whole directory runs in well under two minutes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "stepaudio"
PROFILES = {
    "default": [],
    "embedded": ["-f", str(CHART / "values-embedded.yaml")],
    "stepaudio": ["-f", str(CHART / "values-stepaudio.yaml")],
}
KUBE_VERSIONS = ["1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0"]
RELEASE = "sa"
NAMESPACE = "voice"


def helm_path() -> str | None:
    cand = os.environ.get("HELM") or str(ROOT / ".cache" / "bin" / "helm")
    if Path(cand).is_file() and os.access(cand, os.X_OK):
        return cand
    return shutil.which("helm")


def run_helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    helm = helm_path()
    if helm is None:
        pytest.skip("helm not found: set HELM or run scripts/install-tools.sh (builds .cache/bin/helm)")
    proc = subprocess.run([helm, *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@cache
def _render(profile: str, extra: tuple[str, ...] = (), kube_version: str = "1.33.0") -> tuple[dict[str, Any], ...]:
    proc = run_helm(
        "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", kube_version,
        *PROFILES[profile], *extra,
    )
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


def render(profile: str, *extra: str, kube_version: str = "1.33.0") -> list[dict[str, Any]]:
    return list(_render(profile, tuple(extra), kube_version))


def render_fail(*extra: str) -> str:
    """Render with extra args, expect failure, return stderr."""
    proc = run_helm("template", RELEASE, str(CHART), *extra, check=False)
    assert proc.returncode != 0, f"helm template {' '.join(extra)} should fail but rendered"
    return proc.stderr


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for d in docs:
        if d["kind"] == "Deployment":
            out.append((d["metadata"]["name"], d["spec"]["template"]["spec"]))
        elif d["kind"] == "Pod":
            out.append((d["metadata"]["name"], d["spec"]))
    return out


@pytest.fixture(scope="session")
def helm() -> str:
    h = helm_path()
    if h is None:
        pytest.skip("helm not found: set HELM or run scripts/install-tools.sh (builds .cache/bin/helm)")
    return h
