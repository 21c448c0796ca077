"""Skein's benchmark: unary gRPC through direct, Skein and Envoy paths, and config push.

Run with `python -m bench.run` (or `./dev bench`, which installs h2load and Envoy first).
"""

__all__: list[str] = []
