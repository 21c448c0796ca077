"""The Skein sidecar: a per-instance HTTP/2 proxy that applies mesh policy."""
