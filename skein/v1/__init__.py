"""Generated from protos/skein/v1 by scripts/gen_protos.py; do not edit."""
