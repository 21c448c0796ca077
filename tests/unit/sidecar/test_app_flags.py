"""`skein sidecar` flags: defaults, repeatables, and errors that name the flag and the fix."""

from __future__ import annotations

import argparse

import pytest

from sidecar.app import _check, _instance_id, add_arguments


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="skein sidecar")
    add_arguments(parser)
    return parser.parse_args(list(argv))


BASE = (
    "--service",
    "web",
    "--control",
    "127.0.0.1:15010,10.0.0.2:15010",
    "--app",
    "127.0.0.1:8080",
)


def test_defaults_and_repeatables(monkeypatch: pytest.MonkeyPatch) -> None:
    args = parse(
        *BASE,
        "--upstream",
        "orders=127.0.0.1:9003",
        "--upstream",
        "users=127.0.0.1:9004",
        "--label",
        "version=v2",
        "--subscribe",
        "payments",
        "--weight",
        "3",
    )
    assert args.control == [("127.0.0.1", 15010), ("10.0.0.2", 15010)]
    assert args.inbound == ("127.0.0.1", 15006)
    assert args.outbound == ("127.0.0.1", 15001)
    assert args.admin == ("127.0.0.1", 15000)
    assert args.upstream == [("orders", ("127.0.0.1", 9003)), ("users", ("127.0.0.1", 9004))]
    assert args.label == [("version", "v2")] and args.subscribe == ["payments"]
    assert args.weight == 3
    assert _check(args) is None
    assert _instance_id(args).startswith("web-")


def test_control_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKEIN_CONTROL", "127.0.0.1:7000")
    args = parse("--service", "web", "--app", "127.0.0.1:1")
    assert _check(args) is None
    assert args.control == [("127.0.0.1", 7000)]


@pytest.mark.parametrize(
    ("extra", "flag", "hint"),
    [
        (("--upstream", "orders"), "--upstream", "NAME=HOST:PORT"),
        (("--upstream", "Orders=127.0.0.1:1"), "--upstream", "lowercase DNS label"),
        (("--upstream", "orders=127.0.0.1:99999"), "--upstream", "port must be"),
        (("--label", "novalue"), "--label", "KEY=VALUE"),
        (("--weight", "0"), "--weight", "1-1000"),
        (("--inbound", "nowhere"), "--inbound", "HOST:PORT"),
        (("--subscribe", "Bad_Name"), "--subscribe", "lowercase DNS label"),
    ],
)
def test_bad_values_name_the_flag_and_fix(
    extra: tuple[str, ...], flag: str, hint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        parse(*BASE, *extra)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and hint in err


def test_duplicate_upstream_is_rejected() -> None:
    args = parse(*BASE, "--upstream", "orders=127.0.0.1:1", "--upstream", "orders=127.0.0.1:2")
    problem = _check(args)
    assert problem is not None and "--upstream" in problem and "orders" in problem
