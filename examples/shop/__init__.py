"""The example shop: gRPC services behind Skein sidecars, and the demo that runs them."""

__all__: list[str] = []
