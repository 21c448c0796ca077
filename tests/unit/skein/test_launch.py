"""The launcher restarts a daemon whose port was taken before it could bind."""

from __future__ import annotations

import pathlib
import socket

from skein.launch import ProcessGroup, free_port, skein_argv


def test_wait_ready_retries_on_fresh_ports_when_a_port_was_taken(tmp_path: pathlib.Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = iter([taken.getsockname()[1], free_port()])

        def build() -> tuple[list[str], str | None, dict[str, str]]:
            admin = f"127.0.0.1:{next(ports)}"
            argv = skein_argv(
                "sidecar", "--service", "web", "--control", "127.0.0.1:1",
                "--app", "127.0.0.1:2", "--inbound", "127.0.0.1:0",
                "--outbound", "127.0.0.1:0", "--admin", admin,
            )  # fmt: skip
            return argv, admin, {"admin": admin}

        with ProcessGroup(log_dir=str(tmp_path)) as group:
            daemon = group.start_bound("sidecar", build)
            first_admin = daemon.admin
            daemon.wait_ready(20, path="/healthz")
            assert daemon.admin != first_admin
            assert daemon.addresses["admin"] == daemon.admin
            log = (tmp_path / "sidecar.log").read_bytes()
            assert b"cannot listen" in log and b"restarting on fresh ports" in log


def test_a_sidecar_keeps_its_disk_cache_in_the_group_directory(tmp_path: pathlib.Path) -> None:
    """Runs never share, or leave behind, a sidecar's last good configuration."""
    with ProcessGroup(log_dir=str(tmp_path)) as group:
        daemon = group.sidecar("side", "web", "127.0.0.1:1", "127.0.0.1:2")
        mine = str(tmp_path / "mine")
        given = group.sidecar("own", "web", "127.0.0.1:1", "127.0.0.1:2", "--state-dir", mine)
        daemon.wait_ready(20, path="/healthz")
        state = daemon.argv[daemon.argv.index("--state-dir") + 1]
        assert state == str(tmp_path / "side.state")
        assert given.argv.count("--state-dir") == 1 and mine in given.argv
