"""Generate gRPC stubs from .proto files (the only way they are made).

Usage: python scripts/gen_protos.py [--check]

Two trees are generated:
- protos/skein/v1/*.proto            -> skein/v1/ (the Skein API)
- examples/shop/protos/shop/v1/*.proto -> examples/shop/v1/ (the example shop);
  its imports are rewritten from `shop.v1` to `examples.shop.v1`, since the
  stubs live inside the examples package.

--check regenerates into a temporary directory and fails when the committed
stubs differ (they are stale or were edited by hand).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
from dataclasses import dataclass

import grpc_tools
from grpc_tools import protoc  # type: ignore[import-untyped]

__all__ = ["Tree", "drift", "generate", "main"]

ROOT = pathlib.Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Tree:
    """One proto tree: `protos` (include root) holding `package` (a/b), written to `dest`."""

    protos: str
    package: str
    dest: str
    docstring: str
    module: str  # dotted module the stubs are imported as

    def generate(self, out: pathlib.Path) -> None:
        """Write this tree's stubs under out/dest."""
        root = ROOT / self.protos
        protos = sorted((root / self.package).rglob("*.proto"))
        include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
        with tempfile.TemporaryDirectory() as tmp:
            raw = pathlib.Path(tmp)
            args = [
                "protoc",
                f"-I{root}",
                f"-I{include}",
                f"--python_out={raw}",
                f"--pyi_out={raw}",
                f"--grpc_python_out={raw}",
                *[str(p) for p in protos],
            ]
            if protoc.main(args) != 0:
                sys.exit(f"protoc failed on {self.protos}")
            dest = out / self.dest
            dest.mkdir(parents=True, exist_ok=True)
            proto_module = self.package.replace("/", ".")
            for path in sorted((raw / self.package).iterdir()):
                text = path.read_text()
                if proto_module != self.module:
                    text = text.replace(f"from {proto_module} import", f"from {self.module} import")
                (dest / path.name).write_text(text)
            (dest / "__init__.py").write_text(f'"""{self.docstring}"""\n')

    def committed(self, root: pathlib.Path = ROOT) -> dict[str, bytes]:
        """The stubs as they stand under `root` (a checkout), by relative name."""
        dest = root / self.dest
        if not dest.is_dir():
            return {}
        return {
            str(p.relative_to(root)): p.read_bytes()
            for p in dest.iterdir()
            if p.is_file() and p.suffix in (".py", ".pyi")
        }


TREES = (
    Tree(
        "protos",
        "skein/v1",
        "skein/v1",
        "Generated from protos/skein/v1 by scripts/gen_protos.py; do not edit.",
        "skein.v1",
    ),
    Tree(
        "examples/shop/protos",
        "shop/v1",
        "examples/shop/v1",
        "Generated from examples/shop/protos/shop/v1 by scripts/gen_protos.py; do not edit.",
        "examples.shop.v1",
    ),
)


def generate(out: pathlib.Path) -> None:
    for tree in TREES:
        tree.generate(out)


def drift(root: pathlib.Path = ROOT) -> list[str]:
    """Names (relative to the repository) of generated files that differ from a fresh run.

    `root` is the checkout whose stubs are compared (tests pass a copy, never
    editing the real stubs another process may be importing).
    """
    with tempfile.TemporaryDirectory() as tmp:
        fresh = pathlib.Path(tmp)
        generate(fresh)
        new = {
            str(p.relative_to(fresh)): p.read_bytes()
            for tree in TREES
            for p in (fresh / tree.dest).iterdir()
        }
    old = {name: data for tree in TREES for name, data in tree.committed(root).items()}
    return sorted(name for name in new.keys() | old.keys() if new.get(name) != old.get(name))


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
