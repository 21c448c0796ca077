"""Examples: the shop from the seed documents, its manifests and the demo."""

__all__: list[str] = []
