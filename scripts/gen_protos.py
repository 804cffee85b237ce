"""Regenerate generated/ from protos/ (python, grpc and mypy stubs).

Usage: python scripts/gen_protos.py [--check]

With --check, generate into a temporary folder and exit 1 when it differs from generated/,
so CI catches a proto change whose generated code was not committed. The generator versions
are pinned in pyproject.toml; a different version would produce different files, so the script
refuses to run with one.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from importlib import metadata, resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
GENERATED = ROOT / "generated"
PINNED = {"grpcio-tools": "1.85.1", "mypy-protobuf": "5.1.0"}


def check_generator_versions() -> None:
    """Exit when the installed generators are not the pinned ones."""
    for name, version in PINNED.items():
        installed = metadata.version(name)
        if installed != version:
            sys.exit(f"{name} {installed} is installed; generated/ is made with {version}")


def generate(out: Path) -> None:
    """Compile every .proto under protos/ into out/."""
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    well_known = str(resources.files("grpc_tools") / "_proto")
    # The mypy plugins are console scripts beside this interpreter, which need not be on PATH.
    plugins = Path(sys.executable).parent
    args = [
        "grpc_tools.protoc",
        f"--plugin=protoc-gen-mypy={plugins / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={plugins / 'protoc-gen-mypy_grpc'}",
        f"-I{PROTOS}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")


def differences(left: Path, right: Path) -> list[str]:
    """Return the relative paths that differ between two trees."""
    found: list[str] = []

    def walk(cmp: filecmp.dircmp[str], prefix: str) -> None:
        found.extend(prefix + name for name in cmp.left_only + cmp.right_only + cmp.diff_files)
        for name, sub in cmp.subdirs.items():
            walk(sub, f"{prefix}{name}/")

    walk(filecmp.dircmp(left, right, ignore=["__pycache__"]), "")
    return found


def main() -> None:
    """Regenerate generated/, or with --check compare a fresh generation with it."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if generated/ is stale")
    check = parser.parse_args().check
    check_generator_versions()
    if check:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            stale = differences(Path(tmp), GENERATED)
        if stale:
            sys.exit("generated/ differs from protos/; run scripts/gen_protos.py:\n  " + "\n  ".join(stale))
        print("generated/ is up to date")
        return
    shutil.rmtree(GENERATED, ignore_errors=True)
    GENERATED.mkdir()
    generate(GENERATED)


if __name__ == "__main__":
    main()
