"""docker/images.yaml vs docker/Dockerfile, the chart and docs/CONVENTIONS.md."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import ROOT, render

IMAGES = yaml.safe_load((ROOT / "docker" / "images.yaml").read_text())["images"]
DOCKERFILE = (ROOT / "docker" / "Dockerfile").read_text()
# Entry modules whose package is still being written by other engineers: existence is asserted only once the
# directory exists; until then the module must be in this list (remove a name when its service lands).
PENDING_SERVICES = {"gateway"}


def _conventions_ports() -> dict[str, int]:
    text = (ROOT / "docs" / "CONVENTIONS.md").read_text()
    ports = {}
    for m in re.finditer(r"^\|\s*(\w+)(?: \([^)]*\))?\s*\|\s*(?:grpc )?(\d+)", text, re.M):
        ports[m.group(1)] = int(m.group(2))
    return ports


def _deployment(profile: str, component: str) -> dict[str, Any]:
    """The component's Deployment in the image's profile (or the other profile when it is off there, e.g. rlhf;
    opt-in components, the vocoder, rendered with ``<component>.enabled=true``)."""
    opt_in = ("--set", "vocoder.enabled=true") if component == "vocoder" else ()
    for prof in (profile, "stepaudio" if profile == "embedded" else "embedded"):
        for d in render(prof, *opt_in):
            if d["kind"] == "Deployment" and d["metadata"]["labels"]["app.kubernetes.io/component"] == component:
                if prof == profile or "-gpu" not in d["spec"]["template"]["spec"]["containers"][0]["image"]:
                    return d
    raise AssertionError(f"no Deployment for {component} in profile {profile}")


def _stages() -> dict[str, str]:
    """Dockerfile stage name -> the text of that stage."""
    out: dict[str, str] = {}
    parts = re.split(r"^FROM ", DOCKERFILE, flags=re.M)
    for p in parts[1:]:
        m = re.match(r"\S+ AS (\S+)", p)
        if m:
            out[m.group(1)] = p
    return out


def test_conventions_table_parsed() -> None:
    ports = _conventions_ports()
    assert ports["gateway"] == 50051 and ports["vocoder"] == 50057 and ports["triton"] == 8001


@pytest.mark.parametrize("img", IMAGES, ids=[i["target"] for i in IMAGES])
def test_image_matches_chart(img: dict[str, Any]) -> None:
    comp = img["component"]
    d = _deployment(img["profile"], comp)
    c = d["spec"]["template"]["spec"]["containers"][0]
    repo = c["image"].split("@")[0].rsplit(":", 1)[0]
    assert repo.endswith("/" + img["name"]), f"chart runs {repo}, images.yaml says {img['name']}"
    if img["entrypoint"].startswith("python -m "):
        module = img["entrypoint"].removeprefix("python -m ")
        assert c["command"] + c["args"] == ["python", "-m", module]
    else:
        assert c["command"][0] == img["entrypoint"].split()[0]
    h = img["health"]
    if h["type"] == "grpc":
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["grpc"] == img["port"] == h["port"]
        assert ports["metrics"] == img["metricsPort"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"]["port"] == img["port"]
    elif h["type"] == "http":
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["grpc"] == img["port"] and ports["http"] == img["httpPort"] == h["port"]
        assert c["readinessProbe"]["httpGet"]["path"] == h["path"]
        for m in img["models"]:
            assert f"--load-model={m}" in c["args"]
    else:
        assert h["type"] == "exec" and c["livenessProbe"]["exec"]["command"] == h["command"]
        assert "ports" not in c and img["port"] is None


@pytest.mark.parametrize("img", IMAGES, ids=[i["target"] for i in IMAGES])
def test_image_matches_conventions(img: dict[str, Any]) -> None:
    ports = _conventions_ports()
    if img["port"] is not None:
        assert ports[img["component"]] == img["port"], f"CONVENTIONS.md gives {img['component']} another port"
    else:
        assert img["component"] not in ports


@pytest.mark.parametrize("img", IMAGES, ids=[i["target"] for i in IMAGES])
def test_entry_module_exists_or_is_pending(img: dict[str, Any]) -> None:
    if not img["entrypoint"].startswith("python -m services."):
        return
    name = img["entrypoint"].removeprefix("python -m services.")
    exists = (ROOT / "services" / name / "__main__.py").is_file()
    if not exists:
        assert name in PENDING_SERVICES, f"services/{name}/ does not exist and is not listed as pending"


def test_grpc_service_names_match_protos() -> None:
    declared = set()
    for proto in (ROOT / "protos").rglob("*.proto"):
        text = proto.read_text()
        pkg = re.search(r"^package ([\w.]+);", text, re.M)
        for s in re.finditer(r"^service (\w+)", text, re.M):
            declared.add(f"{pkg.group(1)}.{s.group(1)}" if pkg else s.group(1))
    if not declared:
        pytest.skip("no protos yet")
    for img in IMAGES:
        if img.get("grpcServiceName"):
            assert img["grpcServiceName"] in declared, img["grpcServiceName"]


def test_dockerfile_targets_users_and_pins() -> None:
    stages = _stages()
    for img in IMAGES:
        assert img["target"] in stages, f"docker/Dockerfile has no stage {img['target']}"
        stage = img["target"]
        chain = []
        while stage in stages:  # follow FROM <stage> up to an external base
            chain.append(stages[stage])
            base = stages[stage].split()[0]
            stage = base
        text = "\n".join(chain)
        users = re.findall(r"^USER (\S+)", text, re.M)
        assert users and users[0].split(":")[0] == str(img["user"]) != "0", f"{img['target']} runs as {users}"
        if img["port"] is not None:
            assert re.search(rf"^EXPOSE .*\b{img['port']}\b", stages[img["target"]], re.M), img["target"]
        if img["entrypoint"].startswith("python -m "):
            mod = img["entrypoint"].removeprefix("python -m ")
            assert f'CMD ["python", "-m", "{mod}"]' in stages[img["target"]]
    for m in re.finditer(r"^ARG (\w+_IMAGE)=(\S+)$", DOCKERFILE, re.M):
        ref = m.group(2)
        assert ":" in ref and not ref.endswith(":latest"), f"{m.group(1)} not pinned: {ref}"
    for ref in re.findall(r"^FROM (\S+)", DOCKERFILE, re.M):
        assert ref.startswith("${") or ref in _stages(), f"FROM {ref}: use a pinned ARG or an earlier stage"


def test_start_triton_script_is_valid_bash() -> None:
    import subprocess

    script = ROOT / "docker" / "triton" / "start-triton.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert Path(script).stat().st_mode & 0o111
