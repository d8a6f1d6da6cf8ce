"""Security: TLS (rediss://) and AUTH against real servers, and a password that never shows.

The TLS server is a real redis-server with a throwaway CA and certificate made by ``trustme``;
the notifier and the subscriber both verify it. The password test drives every path that could
print a URL or an error (good and wrong password, refused and silent links, timeouts, close,
repr, stats, configuration errors, a crashed thread, the health endpoint) and searches all of
it: structlog's event dicts and rendered lines, and everything written to stdout and stderr.
Every URL form ``redis.url`` takes, each also with a misspelled option, is checked for the
same: a password, or a misspelled option's value, shows nowhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis
import structlog
import trustme
from structlog.typing import EventDict, WrappedLogger

from notifier import ConfigError, Notifier, NotifierError, load_config
from notifier.config.redaction import redact_url
from notifier.config.urls import parse
from notifier.gateway import issue_token
from notifier.testing import EventCollector, RedisServer, free_port, wait_until

from support.faultproxy import FaultProxy
from support.gateway import GatewayProcess
from support.helpers import make_config

SECRET = "Sup3r-s3cret-pw"
WRONG = "Wr0ng-s3cret-pw"
ODD = "p@ss/w:rd%?#"  # a password that must be percent-encoded in a URL
ODD_QUOTED = quote(ODD, safe="")


class TlsRedisServer(RedisServer):
    """A redis-server that speaks only TLS, on the port plain RedisServer would use."""

    def __init__(self, certs: Path, password: str | None = None) -> None:
        super().__init__(password=password)
        self.ca = certs / "ca.pem"
        self.extra = [
            "--port", "0",  # no plaintext listener at all
            "--tls-port", str(self.port),
            "--tls-cert-file", str(certs / "server.pem"),
            "--tls-key-file", str(certs / "server.key"),
            "--tls-ca-cert-file", str(self.ca),
            "--tls-auth-clients", "no",
        ]  # fmt: skip

    def url_with_ca(self, ca: Path) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={ca}"

    @property
    def url(self) -> str:
        return self.url_with_ca(self.ca)

    def client(self, **kwargs: Any) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=self.password,
            ssl=True,
            ssl_ca_certs=str(self.ca),
            **kwargs,
        )


def write_certs(ca: trustme.CA, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    server = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    server.private_key_pem.write_to_path(str(directory / "server.key"))
    server.cert_chain_pems[0].write_to_path(str(directory / "server.pem"))
    return directory


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedisServer]:
    """A TLS-only redis-server with a password; skipped if this redis-server has no TLS."""
    certs = write_certs(trustme.CA(), tmp_path_factory.mktemp("tls"))
    server = TlsRedisServer(certs, password=SECRET)
    try:
        server.start()
    except (RuntimeError, TimeoutError) as exc:
        server.stop()
        pytest.skip(f"this redis-server ({server.binary}) did not start with TLS options: {exc}")
    try:
        yield server
    finally:
        server.stop()


def test_tls_with_auth_delivers_to_a_tls_subscriber(
    tls_server: TlsRedisServer,
    collector_factory: Callable[..., EventCollector],
    notifier_factory: Callable[..., Notifier],
) -> None:
    """rediss:// with a verified certificate and a password: every event arrives."""
    collector = collector_factory(tls_server.url)
    n = notifier_factory(tls_server.url)
    for i in range(100):
        assert n.publish_progress("tls", i)
    assert n.flush(10)
    events = collector.wait_for(100)
    assert list(range(100)) == [e["data"]["progress"] for e in events]
    stats = n.stats()
    assert (100, True, None) == (stats["published"], stats["connected"], stats["last_error"])


def test_tls_with_an_unknown_ca_refuses_to_connect(
    tls_server: TlsRedisServer,
    tmp_path: Path,
    notifier_factory: Callable[..., Notifier],
) -> None:
    """A server certificate from a CA the client does not trust: no connection, a clear error,
    events queued, the thread alive (verification is on, not silently skipped)."""
    stranger = write_certs(trustme.CA(), tmp_path / "stranger") / "ca.pem"
    n = notifier_factory(tls_server.url_with_ca(stranger))
    assert n.publish_progress("tls-untrusted", 1)
    error = wait_until(lambda: n.stats()["last_error"], 10)
    assert "certificate verify failed" in error
    stats = n.stats()
    assert (False, 1, True) == (stats["connected"], stats["pending"], stats["thread_alive"])
    assert SECRET not in error


# The password never shows ------------------------------------------------------------------


class Recorder:
    """A structlog processor that keeps every event dict (after format_exc_info), then passes
    it on to the renderer, so both the structured and the printed forms can be searched."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, logger: WrappedLogger, name: str, event: EventDict) -> EventDict:
        self.events.append(dict(event))
        return event


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    """structlog set up as an application would (tracebacks rendered to stdout), recording."""
    was_configured, saved = structlog.is_configured(), structlog.get_config()
    recorder = Recorder()
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            recorder,
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )
    try:
        yield recorder
    finally:
        if was_configured:
            structlog.configure(**saved)
        else:
            structlog.reset_defaults()


class Evidence:
    """Everything the scenarios produced that a person or a log pipeline could see."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def add(self, *values: object) -> None:
        for value in values:
            self.texts.append(repr(value))
            self.texts.append(str(value))
            if isinstance(value, BaseException):
                self.texts.append("".join(traceback.format_exception(value)))

    def expect_error(self, call: Callable[[], object]) -> BaseException:
        try:
            call()
        except Exception as exc:
            self.add(exc, exc.args)
            return exc
        raise AssertionError("expected an error")


def scenario(evidence: Evidence, n: Notifier, until: Callable[[Notifier], Any]) -> None:
    """Publish through ``n`` (failed events too), wait for ``until``, then record what a
    caller can look at, close, and record again."""
    try:
        raise TimeoutError("review service did not answer")
    except TimeoutError as exc:
        n.publish_failed("secrets", exc)
    n.publish_progress("secrets", 50.0, message="half way")
    wait_until(lambda: until(n), 10)
    evidence.add(n, n.stats(), n.config, n.config.redis)
    n.close(timeout=0.3)
    evidence.add(n, n.stats())


def config_file(tmp_path: Path, url: str) -> Path:
    path = tmp_path / f"config-{len(list(tmp_path.iterdir()))}.toml"
    path.write_text(f'[redis]\nurl = "{url}"\n')
    return path


def test_the_password_never_appears_in_logs_output_reprs_stats_or_errors(
    redis_factory: Callable[..., RedisServer],
    proxy_factory: Callable[[RedisServer], FaultProxy],
    collector_factory: Callable[..., EventCollector],
    recorder: Recorder,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Good and wrong passwords, refused, silent and slow links, close, a crashed thread and
    configuration errors: no log line, output, repr, stat or exception shows the password."""
    server = redis_factory(password=SECRET)
    collector = collector_factory(server.url)
    proxy = proxy_factory(server)
    evidence = Evidence()

    def url(password: str, port: int, query: str = "") -> str:
        return f"redis://:{password}@127.0.0.1:{port}/0{query}"

    made: list[Notifier] = []

    def notifier(target: str, **tables: dict[str, Any]) -> Notifier:
        made.append(Notifier(make_config(target, **tables)))
        return made[-1]

    try:
        # Right password: delivered.
        scenario(evidence, notifier(server.url), lambda n: n.stats()["published"] == 2)
        collector.wait_for(2)
        # Wrong password, and a password-looking query parameter.
        scenario(evidence, notifier(url(WRONG, server.port)), lambda n: n.stats()["last_error"])
        query = f"?password={WRONG}"
        scenario(
            evidence,
            notifier(f"redis://127.0.0.1:{server.port}/0{query}"),
            lambda n: n.stats()["last_error"],
        )
        # Nothing listening; a password that needs percent-encoding.
        scenario(
            evidence, notifier(url(ODD_QUOTED, free_port())), lambda n: n.stats()["last_error"]
        )
        # A silent link: the connect times out, then (connected first) a publish times out.
        fast = {"connect_timeout": 0.3, "publish_timeout": 0.3}
        proxy.blackhole()
        scenario(
            evidence,
            notifier(url(SECRET, proxy.port), redis=fast),
            lambda n: n.stats()["last_error"],
        )
        proxy.forward()
        slow = notifier(url(SECRET, proxy.port), redis=fast)
        slow.start()
        wait_until(lambda: slow.stats()["connected"], 5)
        proxy.blackhole()
        scenario(evidence, slow, lambda n: "timed out" in (n.stats()["last_error"] or ""))
        proxy.forward()
        # A URL redis-py refuses at connect time: ConfigError now, or a crashed thread with a
        # traceback rendered to stdout (see test_properties.py).
        try:
            crashing = notifier(url(SECRET, server.port, "?socket_timeout=oops"))
        except ConfigError as exc:
            evidence.add(exc)
        else:
            crashing.publish_progress("secrets", 1)
            wait_until(lambda: any("crashed" in e["event"] for e in recorder.events), 5)
            evidence.add(crashing, crashing.stats())
            crashing.close(timeout=0.1)
        # Configuration errors that quote the URL, from a file and from the environment.
        for bad in (
            f"redis://:{SECRET}@127.0.0.1:notaport/0",
            f"redis://user:{ODD_QUOTED}@host:99999/0",
            f"redis://host/x?password={SECRET}",
            f"http://:{SECRET}@host/0",
        ):
            evidence.expect_error(lambda b=bad: load_config(config_file(tmp_path, b)))
            monkeypatch.setenv("NOTIFIER_REDIS_URL", bad)
            evidence.expect_error(lambda: load_config(None))
            evidence.expect_error(lambda: Notifier(None))
            monkeypatch.delenv("NOTIFIER_REDIS_URL")
        # Starting a closed notifier.
        assert isinstance(evidence.expect_error(made[0].start), NotifierError)
    finally:
        for n in made:
            n.close(timeout=0.1)
    out, err = capfd.readouterr()

    events = [repr(e) for e in recorder.events]
    seen = "\n".join([out, err, *events, *evidence.texts])
    for secret in (SECRET, WRONG, ODD, ODD_QUOTED):
        assert secret not in seen
    # The scenarios did happen, and printed what they should have.
    names = {e["event"] for e in recorder.events}
    assert {
        "notifier_connected",
        "notifier_connect_failed",
        "notification_publish_timeout",
        "notifier_closed",
    } <= names
    assert "***" in seen
    assert "notifier_closed" in out


def test_health_output_never_shows_the_password_and_binds_loopback(
    redis_factory: Callable[..., RedisServer],
) -> None:
    """/health and /metrics of a notifier with a password URL; the default bind is loopback."""
    from support.health import health_config, healthy, request, serving

    server = redis_factory(password=SECRET)
    with serving(health_config(server.url)) as (n, endpoint):
        assert n.publish_progress("secrets", 1)
        assert n.flush(5)
        wait_until(lambda: healthy(endpoint.url), 10)
        bodies = [request(endpoint.url + path)[1] for path in ("/health", "/metrics")]
        bound = endpoint._httpd.socket.getsockname()[0]
    assert "127.0.0.1" == bound
    for body in bodies:
        assert SECRET.encode() not in body


def test_interpreter_traceback_of_a_config_error_hides_the_password(tmp_path: Path) -> None:
    """A ConfigError left uncaught (as at a worker's import) prints no password."""
    path = config_file(tmp_path, f"redis://:{SECRET}@host:notaport/0")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    printed = "".join(traceback.format_exception(caught.value))
    assert SECRET not in printed and "***" in printed


def test_command_line_errors_never_show_the_password(
    redis_factory: Callable[..., RedisServer], tmp_path: Path
) -> None:
    """`notifier publish` with a wrong password, `-v`, and `check-config` of a bad URL: the
    commands fail, and nothing they print shows the password."""
    server = redis_factory(password=SECRET)
    wrong = f"redis://:{WRONG}@127.0.0.1:{server.port}/0"
    runs = [
        (["-v", "publish", "cli", "--type", "t", "--timeout", "1"], {"NOTIFIER_REDIS_URL": wrong}),
        (["listen", "cli", "--timeout", "1"], {"NOTIFIER_REDIS_URL": wrong}),
        (["check-config", str(config_file(tmp_path, f"redis://:{SECRET}@host:bad/0"))], {}),
    ]
    for argv, env in runs:
        done = subprocess.run(
            [sys.executable, "-m", "notifier.cli", *argv],
            cwd=tmp_path,
            env={"PATH": os.environ.get("PATH", ""), **env},
            capture_output=True,
            text=True,
            timeout=30,
        )
        printed = done.stdout + done.stderr
        assert 0 != done.returncode, printed
        assert "Traceback" not in printed
        assert SECRET not in printed and WRONG not in printed, printed


# Every URL form, and a misspelled option in each --------------------------------------------

SENTINEL_SECRET = "s3cr3t-Pa55word"
TYPO_SECRET = "hunter2-secret-pw"  # the value of a misspelled option: as often as not a password
URL_FORMS = {
    "user and password": f"redis://user:{SECRET}@127.0.0.1:6379/0",
    "password only": f"redis://:{SECRET}@127.0.0.1:6379/0",
    "percent-encoded password": f"redis://user:{ODD_QUOTED}@127.0.0.1:6379/0",
    "password option": f"redis://127.0.0.1:6379/0?password={SECRET}",
    # redis-py decodes the key: this is its password= too
    "percent-encoded option name": f"redis://127.0.0.1:6379/0?pass%77ord={SECRET}",
    "tls": f"rediss://:{SECRET}@127.0.0.1:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/etc/ca.pem",
    "unix socket": f"unix:///run/redis.sock?password={SECRET}&db=1",
    "sentinel": (
        f"redis+sentinel://user:{SECRET}@h1:26379,h2:26379/mymaster/0"
        f"?sentinel_username=watcher&sentinel_password={SENTINEL_SECRET}&sentinel_tls=true"
    ),
    "cluster": f"redis+cluster://user:{SECRET}@h1:7000,h2:7001/?tls=true&ssl_cert_reqs=required",
}


@pytest.mark.parametrize("form", list(URL_FORMS))
def test_no_url_form_shows_a_password_or_a_misspelled_options_value(
    form: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each form redis.url takes, as given and with a misspelled option: redact_url, the parsed
    topology, the configuration and the Notifier (repr and str), and the ConfigError of the
    misspelled one (from a file and from NOTIFIER_REDIS_URL), show no password and not the
    misspelled option's value; the error still names the misspelled option."""
    monkeypatch.delenv("NOTIFIER_REDIS_URL", raising=False)
    monkeypatch.delenv("NOTIFIER_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./config.toml
    url = URL_FORMS[form]
    typo = "sentinel_pasword" if url.startswith("redis+sentinel") else "pasword"
    misspelled = f"{url}{'&' if '?' in url else '?'}{typo}={TYPO_SECRET}"
    evidence = Evidence()
    config = load_config(config_file(tmp_path, url))
    n = Notifier(config)
    try:
        evidence.add(redact_url(url), parse(url), config, config.redis, n)
    finally:
        n.close(timeout=0.1)
    evidence.add(redact_url(misspelled))
    errors = [evidence.expect_error(lambda: load_config(config_file(tmp_path, misspelled)))]
    monkeypatch.setenv("NOTIFIER_REDIS_URL", misspelled)
    errors.append(evidence.expect_error(lambda: load_config(None)))
    errors.append(evidence.expect_error(lambda: Notifier(None)))
    seen = "\n".join(evidence.texts)
    for secret in (SECRET, SENTINEL_SECRET, TYPO_SECRET, ODD, ODD_QUOTED):
        assert secret not in seen
    for error in errors:
        assert (True, True) == (isinstance(error, ConfigError), typo in str(error)), error


def test_a_password_under_an_encoded_option_name_shows_in_no_gateway_or_health_output(
    redis_factory: Callable[..., RedisServer],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """redis-py reads ``?pass%77ord=`` as ``password=``: the gateway and a notifier connect
    with it, and neither the gateway's start-up line and log nor /health and /metrics, nor
    the notifier's log, show it."""
    from support.health import health_config, healthy, request, serving

    server = redis_factory(password=SECRET)
    url = f"redis://127.0.0.1:{server.port}/0?pass%77ord={SECRET}"
    with GatewayProcess(url, tmp_path) as gateway:
        token = issue_token("secrets", config=gateway.config)
        last = httpx.get(gateway.url(f"/tasks/secrets/last?token={token}"), timeout=10)
    assert 404 == last.status_code, last.text  # Redis answered: no events for this task
    with serving(health_config(url)) as (n, endpoint):
        assert n.publish_progress("secrets", 1)
        assert n.flush(5)
        wait_until(lambda: healthy(endpoint.url), 10)
        bodies = [request(endpoint.url + path)[1] for path in ("/health", "/metrics")]
    out, err = capfd.readouterr()
    seen = "\n".join([gateway.output(), out, err, *(body.decode() for body in bodies)])
    assert SECRET not in seen
    assert "pass%77ord=***" in gateway.output()


def test_a_garbled_sentinel_url_shows_no_part_of_its_password(tmp_path: Path) -> None:
    """A ``/`` left unencoded in a Sentinel URL's password cuts the host list short inside
    it: the ConfigError says which host is bad without showing any part of the password."""
    head, tail = "Sup3r", "s3cret-pw"
    url = f"redis+sentinel://user:{head}/{tail}@h1:26379/mymaster"
    with pytest.raises(ConfigError) as caught:
        load_config(config_file(tmp_path, url))
    printed = "".join(traceback.format_exception(caught.value))
    assert "bad port" in printed, printed
    assert (False, False) == (head in printed, tail in printed), printed
