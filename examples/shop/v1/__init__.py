"""Generated from examples/shop/protos/shop/v1 by scripts/gen_protos.py; do not edit."""
