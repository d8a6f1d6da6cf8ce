"""The `notifier` command line, run as a subprocess the way an operator runs it."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from notifier.testing import RedisServer, free_port, wait_until

from support.health import REDIS_BOUND, health_config, healthy, serving
from support.helpers import CLEAN_ENV, listener

pytestmark = pytest.mark.timeout(90)
SCRIPT = Path(sys.executable).parent / "notifier"  # the console script pyproject declares


def notifier_cli(*args: str, cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "notifier.cli", *args],
        cwd=cwd,
        env=CLEAN_ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single line a failing command printed on stderr (and nothing on stdout)."""
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert 1 == len(lines), done.stderr
    assert lines[0].startswith("notifier: ")
    return lines[0]


def write_config(path: Path, redis_url: str, extra: str = "") -> Path:
    path.write_text(f'[redis]\nurl = "{redis_url}"\nconnect_timeout = 1.0\n{extra}')
    return path


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    """A valid file: exit 0 and '<path>: OK', through the installed console script."""
    config = write_config(tmp_path / "good.toml", "redis://127.0.0.1:6379/0")
    done = subprocess.run(
        [str(SCRIPT), "check-config", str(config)],
        cwd=tmp_path,
        env=CLEAN_ENV,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (0, f"{config}: OK\n", "") == (done.returncode, done.stdout, done.stderr)


def test_check_config_rejects_a_bad_file_in_one_line(tmp_path: Path) -> None:
    """An invalid value: exit 1 and the ConfigError naming the file and key, no traceback."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[queue]\nmaxsize = -5\n")
    done = notifier_cli("--config", str(bad), "check-config", cwd=tmp_path)
    assert 1 == done.returncode
    expected = f"notifier: {bad}: queue.maxsize must be a positive integer, got -5"
    assert expected == one_error_line(done)
    missing = notifier_cli("check-config", str(tmp_path / "nope.toml"), cwd=tmp_path)
    assert 1 == missing.returncode
    assert "file not found" in one_error_line(missing)


def test_check_config_rejects_a_misspelled_table_and_names_the_right_one(tmp_path: Path) -> None:
    """[helth] is not silently ignored: exit 1, naming the table and the nearest right name."""
    bad = tmp_path / "typo.toml"
    bad.write_text("[helth]\nenabled = true\n")
    done = notifier_cli("check-config", str(bad), cwd=tmp_path)
    assert 1 == done.returncode
    line = one_error_line(done)
    assert line.startswith(f"notifier: {bad}: [helth] is not a notifier table")
    assert "did you mean [health]?" in line


def test_check_config_accepts_the_shipped_file(tmp_path: Path) -> None:
    """The repository's config.toml, with its declared application tables, is OK."""
    shipped = Path(__file__).resolve().parents[2] / "config.toml"
    done = notifier_cli("check-config", str(shipped), cwd=tmp_path)
    assert (0, f"{shipped}: OK\n") == (done.returncode, done.stdout)


def test_check_config_without_a_file_checks_the_defaults(tmp_path: Path) -> None:
    """No path, no $NOTIFIER_CONFIG, no ./config.toml: the built-in defaults are OK."""
    done = notifier_cli("check-config", cwd=tmp_path)
    assert (0, "defaults: OK\n") == (done.returncode, done.stdout)


def test_usage_errors_exit_2_and_every_command_has_help(tmp_path: Path) -> None:
    """No command, or a missing required option, is a usage error (2); --help works on each."""
    assert 2 == notifier_cli(cwd=tmp_path).returncode
    assert 2 == notifier_cli("publish", "t1", cwd=tmp_path).returncode  # --type is required
    assert 2 == notifier_cli("listen", cwd=tmp_path).returncode  # TASK_ID or --all
    for command in ("check-config", "health", "listen", "gateway", "publish"):
        done = notifier_cli(command, "--help", cwd=tmp_path)
        assert (0, True) == (done.returncode, done.stdout.startswith(f"usage: notifier {command}"))


def test_health_reports_healthy_then_unhealthy(
    redis_factory: Callable[..., RedisServer], tmp_path: Path
) -> None:
    """Exit 0 with a line for this process while healthy (URL from the config file), exit 1
    naming the reason once Redis is down."""
    redis = redis_factory()
    with serving(health_config(redis.url)) as (_, server):
        wait_until(lambda: healthy(server.url), 10)
        config = write_config(
            tmp_path / "c.toml", redis.url, f"[health]\nenabled = true\nport = {server.port}\n"
        )
        done = notifier_cli("--config", str(config), "health", cwd=tmp_path)
        assert 0 == done.returncode, done.stderr
        assert done.stdout.startswith(f"ok (HTTP 200 from {server.url}/health)")
        assert f"pid {os.getpid()}, healthy, connected, queue 0/10000" in done.stdout

        redis.kill()
        wait_until(lambda: not healthy(server.url), REDIS_BOUND)
        done = notifier_cli("health", "--url", server.url, cwd=tmp_path)
        assert 1 == done.returncode
        assert done.stdout.startswith("unhealthy (HTTP 503")
        assert "UNHEALTHY: redis unreachable: " in done.stdout
        assert "not connected" in done.stdout
        assert ", last error " in done.stdout

        # Healthy again: the error is shown as resolved, with its age, not as a current one.
        redis.start()
        wait_until(lambda: healthy(server.url), REDIS_BOUND)
        done = notifier_cli("health", "--url", server.url, cwd=tmp_path)
        assert 0 == done.returncode, done.stdout
        assert f"pid {os.getpid()}, healthy, connected" in done.stdout
        assert re.search(r", resolved error \d+s ago: \w+", done.stdout), done.stdout
        assert "last error" not in done.stdout


def test_health_says_when_nothing_answers(tmp_path: Path) -> None:
    """No endpoint at the URL: exit 1 with one line saying it cannot be reached."""
    url = f"http://127.0.0.1:{free_port()}/health"
    done = notifier_cli("health", "--url", url, cwd=tmp_path)
    assert 1 == done.returncode
    assert one_error_line(done).startswith(f"notifier: cannot reach the health endpoint at {url}")


def test_listen_prints_events_published_by_another_process(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """listen --count 2 prints the two events `notifier publish` sends, one JSON line each."""
    config = str(write_config(tmp_path / "c.toml", redis_server.url))
    errors = tmp_path / "listen.err"
    with errors.open("w") as stderr:
        process = listener(
            config, "cli-1", "--count", "2", "--timeout", "30", cwd=tmp_path, stderr=stderr
        )
        try:
            # Subscribed (and confirmed) before it says so: nothing published after is missed.
            wait_until(lambda: "listening on task:cli-1" in errors.read_text(), 20)
            for step in ("one", "two"):
                data = json.dumps({"name": step, "text": "héllo"})
                args = ("publish", "cli-1", "--type", "step", "--data", data)
                published = notifier_cli("--config", config, *args, cwd=tmp_path)
                assert (0, "published step to task:cli-1\n") == (
                    published.returncode,
                    published.stdout,
                )
            out, _ = process.communicate(timeout=30)
        finally:
            process.kill()
            process.wait()
    assert 0 == process.returncode, errors.read_text()
    events = [json.loads(line) for line in out.splitlines()]
    assert [("step", "one", "héllo"), ("step", "two", "héllo")] == [
        (e["type"], e["data"]["name"], e["data"]["text"]) for e in events
    ]
    assert {"cli-1"} == {e["task_id"] for e in events}


def test_listen_to_a_workflow_prints_its_events(redis_server: RedisServer, tmp_path: Path) -> None:
    """listen --workflow ID prints the workflow's events, not those of the task of that id."""
    from notifier import Notifier, load_config
    from notifier.events import encode_event
    from notifier.workflows.steps import declaration, member_step

    config = str(write_config(tmp_path / "c.toml", redis_server.url))
    errors = tmp_path / "listen.err"
    with errors.open("w") as stderr:
        process = listener(config, "--workflow", "cli-wf", "--count", "2", "--timeout", "30",
                           cwd=tmp_path, stderr=stderr)  # fmt: skip
        try:
            wait_until(lambda: "listening on task:workflow:cli-wf" in errors.read_text(), 20)
            with Notifier(load_config(config)) as n:
                assert n.publish("cli-wf", "step", {})  # the task of that id
                assert n.integration.publish_step(declaration("cli-wf", branch="m", size=1, seal=1))
                payload = encode_event("m", "completed", {"result": 1}, 1 << 20)
                assert n.integration.publish_step(member_step("cli-wf", "m", "completed", payload))
            out, _ = process.communicate(timeout=30)
        finally:
            process.kill()
            process.wait()
    assert 0 == process.returncode, errors.read_text()
    events = [json.loads(line) for line in out.splitlines()]
    assert [("member", "cli-wf"), ("completed", "cli-wf")] == [
        (e["type"], e["workflow_id"]) for e in events
    ]


def test_listen_reconnects_when_redis_goes_away_and_keeps_printing(
    redis_factory: Callable[..., RedisServer], tmp_path: Path
) -> None:
    """Redis killed under a listener: it says so on stderr, reconnects with backoff once Redis
    is back, says so again, and prints what is published from then on."""
    redis = redis_factory()
    config = str(write_config(tmp_path / "c.toml", redis.url))
    errors = tmp_path / "listen.err"

    def send(step: str) -> None:
        with redis.client() as client:
            client.publish("task:cli-2", json.dumps({"type": "step", "data": {"step": step}}))

    with errors.open("w") as stderr:
        process = listener(
            config, "cli-2", "--count", "2", "--timeout", "60", cwd=tmp_path, stderr=stderr
        )
        try:
            wait_until(lambda: "listening on task:cli-2" in errors.read_text(), 20)
            send("before")
            # Killed only once the listener has printed it: a SIGKILL right after the PUBLISH
            # reply can come before Redis has written the message to the subscriber's socket.
            assert process.stdout is not None
            readable, _, _ = select.select([process.stdout], [], [], 20)
            assert readable, errors.read_text()
            first = process.stdout.readline()
            redis.kill()
            wait_until(lambda: "reconnecting until Ctrl-C" in errors.read_text(), 20)
            redis.start()
            wait_until(lambda: "reconnected after" in errors.read_text(), 20)
            send("after")
            out, _ = process.communicate(timeout=30)
        finally:
            process.kill()
            process.wait()
            if process.stdout is not None:
                process.stdout.close()  # also when communicate() never ran to the end
    said = errors.read_text()
    assert 0 == process.returncode, said
    lines = [first, *out.splitlines()]
    assert ["before", "after"] == [json.loads(line)["data"]["step"] for line in lines]
    assert "Traceback" not in said
    assert ["listening", "redis", "reconnected"] == [
        line.split()[1] for line in said.splitlines()
    ], said


def test_listen_times_out_when_too_few_events_arrive(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """--count not reached within --timeout: exit 1 saying how many arrived; --all alone: 0."""
    config = str(write_config(tmp_path / "c.toml", redis_server.url))
    done = notifier_cli(
        "--config", config, "listen", "cli-quiet", "--count", "1", "--timeout", "0.5", cwd=tmp_path
    )
    assert (1, "") == (done.returncode, done.stdout)
    assert "notifier: 0 of 1 events arrived within 0.5s" == done.stderr.splitlines()[-1]
    done = notifier_cli("--config", config, "listen", "--all", "--timeout", "0.5", cwd=tmp_path)
    assert 0 == done.returncode, done.stderr


def test_publish_refuses_bad_input_in_one_line(redis_server: RedisServer, tmp_path: Path) -> None:
    """Bad JSON, a non-object, a bad task id or event type: exit 1, one clear line each."""
    config = str(write_config(tmp_path / "c.toml", redis_server.url))
    cases = {
        ("t1", "--type", "x", "--data", "{oops"): "notifier: --data is not valid JSON: ",
        (
            "t1",
            "--type",
            "x",
            "--data",
            "[1, 2]",
        ): "notifier: --data must be a JSON object, got list",
        ("bad id", "--type", "x"): "notifier: task_id must not contain whitespace",
        ("t1", "--type", "no spaces"): "notifier: event type must be",
    }
    for args, expected in cases.items():
        done = notifier_cli("--config", config, "publish", *args, cwd=tmp_path)
        assert 1 == done.returncode, args
        assert one_error_line(done).startswith(expected), done.stderr


def test_publish_reports_an_unreachable_redis_without_its_password(tmp_path: Path) -> None:
    """Nothing listening at the URL: exit 1 with the reason, the password redacted."""
    url = f"redis://:topsecret-pw@127.0.0.1:{free_port()}/0"
    config = str(write_config(tmp_path / "c.toml", url))
    args = ("publish", "t1", "--type", "x", "--timeout", "1")
    done = notifier_cli("--config", config, *args, cwd=tmp_path)
    assert 1 == done.returncode
    line = one_error_line(done)
    assert line.startswith("notifier: not published to task:t1 at redis://:***@127.0.0.1:")
    assert "topsecret-pw" not in done.stdout + done.stderr
    listen = notifier_cli("--config", config, "listen", "t1", "--timeout", "1", cwd=tmp_path)
    assert 1 == listen.returncode
    assert "Traceback" not in listen.stderr
    said = listen.stderr.splitlines()
    assert said[0].startswith("notifier: redis at redis://:***@127.0.0.1:")
    assert said[0].endswith("(reconnecting until Ctrl-C or --timeout)")
    assert said[-1].endswith("(still unreachable after 1.0s)")
    assert "topsecret-pw" not in listen.stdout + listen.stderr


def test_publish_never_serves_the_health_endpoint(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """With [health] enabled in the config, `notifier publish` still does not bind the port."""
    port = free_port()
    config = write_config(
        tmp_path / "c.toml", redis_server.url, f"[health]\nenabled = true\nport = {port}\n"
    )
    done = notifier_cli("--config", str(config), "-v", "publish", "t1", "--type", "x", cwd=tmp_path)
    assert 0 == done.returncode, done.stderr
    assert "notifier_closed" in done.stderr  # --verbose shows the library's events
    assert "health_endpoint_started" not in done.stderr
