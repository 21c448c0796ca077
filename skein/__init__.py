"""Skein: shared code for the control daemon, the sidecar and the CLI."""

__all__: list[str] = []
