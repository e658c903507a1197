"""Print pip constraints that pin every dependency of pyproject.toml to its lower bound (``name>=X`` -> ``name==X``),
for ``make test-lowest``: the suite run against the oldest releases the project says it supports.

    python scripts/lowest_constraints.py --extra test > constraints.txt
    pip install -c constraints.txt -e ".[test]"

Everything else (the dependencies' own dependencies) resolves as pip resolves it for a user. torch and torchvision
are left out: they stay the ones installed from this machine's wheel cache (torch's bound is compile-checked by
``scripts/check_cxx17.sh`` instead). A dependency without a lower bound is an error, since its "oldest" would be
whatever the index still serves.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
KEEP_INSTALLED = {"torch", "torchvision"}


def requirements(project: dict, extras: list[str]) -> list[Requirement]:
    """The project's dependencies and those of ``extras``, following self-references such as ``hf-acts[kernels]``."""
    name = project["name"]
    optional = project.get("optional-dependencies", {})
    todo, seen, out = list(extras), set(), [Requirement(r) for r in project["dependencies"]]
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        if extra not in optional:
            raise SystemExit(f"pyproject.toml has no extra {extra!r} (has: {', '.join(optional)})")
        for line in optional[extra]:
            req = Requirement(line)
            if req.name == name:
                todo.extend(req.extras)
            else:
                out.append(req)
    return out


def lower_bound(req: Requirement) -> str | None:
    """``X`` of ``>=X`` or ``~=X`` (``==X`` pins are their own bound), or None without one."""
    for spec in req.specifier:
        if spec.operator in (">=", "~=", "=="):
            return spec.version
    return None


def constraints(extras: list[str]) -> list[str]:
    """One ``name==bound`` line per dependency (markers kept)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines, unbounded = [], []
    for req in requirements(project, extras):
        if req.name in KEEP_INSTALLED:
            continue
        bound = lower_bound(req)
        if bound is None:
            unbounded.append(req.name)
            continue
        lines.append(f"{req.name}=={bound}" + (f"; {req.marker}" if req.marker else ""))
    if unbounded:
        raise SystemExit(f"no lower bound in pyproject.toml for: {', '.join(unbounded)}")
    return sorted(set(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extra", action="append", default=[], help="an extra whose dependencies to pin too")
    args = parser.parse_args(argv)
    sys.stdout.write("".join(line + "\n" for line in constraints(args.extra)))


if __name__ == "__main__":
    main()
