"""Model files shipped inside installed Python packages, found without importing the package (some packages pull in
dependencies the project never installs)."""

from __future__ import annotations

import importlib.util
import sysconfig
from pathlib import Path


def package_dirs(package: str) -> list[Path]:
    """The folders where ``package`` is installed (its import locations, then site-packages as a fallback)."""
    dirs: list[Path] = []
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        dirs += [Path(p) for p in spec.submodule_search_locations]
    dirs.append(Path(sysconfig.get_paths()["purelib"]) / package)
    return dirs


def package_file(package: str, pattern: str) -> Path | None:
    """The first file matching ``pattern`` (a glob relative to the package folder) inside ``package``, or None."""
    for d in package_dirs(package):
        found = sorted(d.glob(pattern))
        if found:
            return found[0]
    return None
