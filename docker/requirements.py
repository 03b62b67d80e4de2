"""Print the project's requirements for the given extras, one a line (the image build installs them with pip).

    python docker/requirements.py pyproject.toml serve embedded > /tmp/reqs.txt
"""

import sys
import tomllib


def main(argv: list[str]) -> int:
    path, *extras = argv
    with open(path, "rb") as f:
        project = tomllib.load(f)["project"]
    deps = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            print(f"unknown extra {extra!r}; pyproject.toml has {sorted(optional)}", file=sys.stderr)
            return 2
        deps += optional[extra]
    print("\n".join(deps))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
