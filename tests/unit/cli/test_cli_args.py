"""CLI argument and manifest errors: exit 2, a message naming what and where, nothing sent."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from skein import cli
from skein.localetcd import free_port


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def dead_control() -> str:
    """An address with nothing listening: reaching it would fail with exit 1, not 2."""
    return f"127.0.0.1:{free_port()}"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["apply"], "-f/--filename"),
        (["wait"], "--version"),
        (["wait", "--version", "x"], "invalid int value"),
        (["wait", "--version", "3", "--timeout", "0"], "must be > 0"),
        (["get"], "kind"),
        (["get", "svc", "-o", "xml"], "invalid choice"),
        (["delete", "service"], "name"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(argv, capsys)
    assert code == cli.EXIT_USAGE
    assert needle in err


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run([], capsys)
    assert code == cli.EXIT_USAGE
    assert "COMMAND" in err


@pytest.mark.parametrize("value", ["localhost", "host:http", ":15010", "a:1,b"])
def test_bad_control_flag_names_flag_and_example(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["status", "--control", value], capsys)
    assert code == cli.EXIT_USAGE
    assert err.startswith("error: --control")
    assert "example: --control 127.0.0.1:15010" in err


def test_bad_env_control_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SKEIN_CONTROL", "nonsense")
    code, _, err = run(["status"], capsys)
    assert code == cli.EXIT_USAGE
    assert "SKEIN_CONTROL" in err


GOOD = """\
kind: Service
metadata: {name: users}
spec: {port: 8001}
"""

BAD_SECOND = """\
kind: Service
metadata: {name: orders}
---
kind: TrafficPolicy
metadata: {name: orders}
spec:
  service: orders
  loadBalancer: {algorithm: FASTEST}
"""


def test_invalid_manifest_names_file_index_and_field(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.yaml").write_text(GOOD)
    bad = tmp_path / "b.yaml"
    bad.write_text(BAD_SECOND)
    code, out, err = run(["apply", "-f", str(tmp_path), "--control", dead_control()], capsys)
    assert code == cli.EXIT_USAGE  # 2, not 1: nothing tried to reach the (dead) control
    assert f"{bad}#1" in err
    assert "spec.load_balancer.algorithm" in err
    assert "FASTEST" in err
    assert "nothing was applied" in err
    assert out == ""
    assert len(err.strip().splitlines()) == 1


def test_invalid_yaml_names_file_and_line(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("kind: Service\nmetadata: {name: x\n")
    code, _, err = run(["apply", "-f", str(bad), "--control", dead_control()], capsys)
    assert code == cli.EXIT_USAGE
    assert str(bad) in err
    assert "line" in err


def test_missing_file(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    code, _, err = run(["apply", "-f", str(missing), "--control", dead_control()], capsys)
    assert code == cli.EXIT_USAGE
    assert f"{missing}: no such file or directory" in err


def test_empty_manifest_is_an_error(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("---\n")
    code, _, err = run(["apply", "-f", str(empty), "--control", dead_control()], capsys)
    assert code == cli.EXIT_USAGE
    assert "no resources" in err


def test_unreachable_control_one_line_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    first, second = dead_control(), dead_control()
    code, out, err = run(
        ["status", "--control", f"{first},{second}", "--connect-timeout", "0.3"], capsys
    )
    assert code == cli.EXIT_FAILURE
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert first in lines[0] and second in lines[0]
    assert "skein control" in lines[0] and "SKEIN_CONTROL" in lines[0]


def test_operator_commands_do_not_import_the_daemons() -> None:
    code = (
        "import sys; from skein import cli; cli.build_parser();"
        "print(any(m.split('.')[0] in ('sidecar', 'control') for m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_help_lists_every_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "skein.cli", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("control", "sidecar", "apply", "get", "delete", "status", "wait", "demo"):
        assert command in result.stdout


@pytest.mark.parametrize("argv", [["get", "gadgets"], ["delete", "widget", "x"]])
def test_unknown_kind_is_caught_before_any_call(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run([*argv, "--control", dead_control()], capsys)
    assert code == cli.EXIT_USAGE
    assert "KIND: unknown kind" in err and "Service (svc)" in err


def test_directory_without_manifests(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "README.txt").write_text("not a manifest\n")
    code, out, err = run(["apply", "-f", str(tmp_path), "--control", dead_control()], capsys)
    assert code == cli.EXIT_USAGE and out == ""
    assert err.strip() == (
        f"error: invalid manifest: {tmp_path}: directory has no *.yaml or *.yml files; "
        "nothing was applied"
    )
