.PHONY: setup demo test lint typecheck protos bench fmt
setup: ; ./dev setup
demo: ; ./dev demo
test: ; ./dev test
lint: ; ./dev lint
typecheck: ; ./dev typecheck
protos: ; ./dev protos
bench: ; ./dev bench
fmt: ; .venv/bin/ruff format . && .venv/bin/ruff check --fix .
