"""Generate skein/v1 stubs from protos/ (the only way they are made).

Usage: python scripts/gen_protos.py [--check]
--check regenerates into a temporary directory and fails when the committed
stubs differ (they are stale or were edited by hand).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

from grpc_tools import protoc  # type: ignore[import-untyped]
import grpc_tools

ROOT = pathlib.Path(__file__).resolve().parent.parent


def generate(out: pathlib.Path) -> None:
    protos = sorted((ROOT / "protos").rglob("*.proto"))
    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{ROOT / 'protos'}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *[str(p) for p in protos],
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    init = out / "skein" / "v1" / "__init__.py"
    init.write_text('"""Generated from protos/skein/v1 by scripts/gen_protos.py; do not edit."""\n')


def drift() -> list[str]:
    """Names of generated files that differ from a fresh generation."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = pathlib.Path(tmp)
        generate(fresh)
        new = {p.relative_to(fresh): p.read_bytes() for p in (fresh / "skein" / "v1").iterdir()}
    old = {
        p.relative_to(ROOT): p.read_bytes()
        for p in (ROOT / "skein" / "v1").iterdir()
        if p.is_file() and p.suffix in (".py", ".pyi")
    }
    return sorted(str(name) for name in new.keys() | old.keys() if new.get(name) != old.get(name))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true", help="fail when stubs are stale")
    if parser.parse_args().check:
        stale = drift()
        if stale:
            sys.exit(f"generated stubs are stale: {', '.join(stale)}; run `make protos`")
        return
    generate(ROOT)


if __name__ == "__main__":
    main()
