"""The Skein control daemon: etcd-backed discovery and operator API."""

__all__: list[str] = []
