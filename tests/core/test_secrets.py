"""No secret in any rendering of a URL, an option set, an error or a log record (issue 14).

Property-based: for arbitrary passwords (any text, including ``/?#@%:[]`` and non-ASCII),
in the user info and in ``?password=``, on every scheme.
"""

from __future__ import annotations

import logging

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import msgbus
from msgbus import BusURL, InvalidURL
from msgbus.backend import parse_options
from msgbus.secrets import SecretFilter, is_secret_option, mask, remember
from msgbus.testing.leaks import every_log_record, find_leaks
from msgbus.url import HostPort

SCHEMES = [
    "amqp",
    "amqps",
    "kafka",
    "stomp",
    "stomp+ssl",
    "activemq",
    "kombu+amqp",
    "kombu+redis",
    "kombu+sqla+sqlite",
    "memory",
]
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
# A recognisable secret made of arbitrary text: the markers let the test find any half of
# it that a parser split off at a delimiter.
SECRETS = TEXT.map(lambda s: f"Pw7x{s}Qz9k")
ANCHORS = ("Pw7x", "Qz9k")
HOSTS = st.sampled_from(
    [HostPort("127.0.0.1", 5672), HostPort("[::1]", 9092), HostPort("broker.local", None)]
)


def renderings(url: BusURL) -> list[str]:
    return [repr(url), str(url), url.render(), f"{url}", f"{url!r}"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    scheme=st.sampled_from(SCHEMES),
    user=TEXT,
    password=SECRETS,
    host=HOSTS,
    path=TEXT,
    option=SECRETS,
)
def test_round_trip_and_no_secret_in_any_rendering(
    scheme: str, user: str, password: str, host: HostPort, path: str, option: str
) -> None:
    url = BusURL(
        scheme,
        (host,),
        user,
        password,
        path,
        {"password": option, "ssl_key_password": option, "heartbeat": "30"},
    )
    assert BusURL.parse(url.render(hide_password=False)) == url
    for secret in (password, option):
        assert not find_leaks(secret, renderings(url), anchors=ANCHORS)


@settings(max_examples=300, deadline=None)
@given(scheme=st.sampled_from(SCHEMES), password=SECRETS, port=st.sampled_from(["5672", ""]))
def test_an_unencoded_password_is_parsed_or_refused_without_showing_it(
    scheme: str, password: str, port: str
) -> None:
    text = f"{scheme}://ana:{password}@127.0.0.1{':' if port else ''}{port}/vhost"
    try:
        url = BusURL.parse(text)
    except InvalidURL as exc:
        assert not find_leaks(password, [str(exc), repr(exc)], anchors=ANCHORS)
    else:
        assert not find_leaks(password, renderings(url), anchors=ANCHORS)


@settings(max_examples=200, deadline=None)
@given(scheme=st.sampled_from(SCHEMES), secret=SECRETS, junk=st.sampled_from(["[::1", "h:x"]))
def test_errors_about_other_parts_never_quote_the_password(
    scheme: str, secret: str, junk: str
) -> None:
    for text in (
        f"{scheme}://ana:{secret}@{junk}/",
        f"{scheme}://{junk}/?password={secret}",
    ):
        with pytest.raises(InvalidURL) as info:
            BusURL.parse(text)
        assert not find_leaks(secret, [str(info.value)], anchors=ANCHORS)


def test_the_issue_examples() -> None:
    url = BusURL.parse("amqp://127.0.0.1:5672?username=guest&password=hunter22")
    assert "hunter22" not in repr(url) and "password=***" in str(url)
    assert "hunter22" in url.render(hide_password=False)
    with pytest.raises(InvalidURL) as info:
        BusURL.parse("amqp://guest:my/Secret@127.0.0.1:5672/")
    assert "my" not in str(info.value).replace("amqp", "") and "Secret" not in str(info.value)
    assert "percent-encode" in str(info.value)


@pytest.mark.parametrize(
    "name", ["password", "passcode", "ssl_key_password", "sasl_plain_password", "key_password"]
)
def test_secret_option_names(name: str) -> None:
    assert is_secret_option(name)
    assert is_secret_option("sasl_oauth_token") and is_secret_option("client_secret")
    assert not is_secret_option("username") and not is_secret_option("heartbeat")


def test_option_errors_hide_secret_values() -> None:
    import dataclasses

    @dataclasses.dataclass
    class Opts:
        passcode: int = 0  # a secret by name even without repr=False

    with pytest.raises(msgbus.ConfigurationError) as info:
        parse_options(Opts, BusURL.parse("x://h?passcode=Zq9kAbc"), {}, backend="x")
    assert "Zq9kAbc" not in str(info.value)


def test_msgbus_errors_mask_remembered_secrets() -> None:
    remember("R3memb3red!")
    err = msgbus.BrokerUnavailable("driver said: login R3memb3red! refused")
    assert "R3memb3red!" not in str(err) and "***" in str(err)
    assert "R3memb3red%21" not in mask("url amqp://u:R3memb3red%21@h")


def test_secret_filter_masks_message_args_and_traceback() -> None:
    remember("F1lterS3cret")
    record = logging.LogRecord("app", logging.INFO, __file__, 1, "pw=%s", ("F1lterS3cret",), None)
    try:
        raise RuntimeError("F1lterS3cret")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    assert SecretFilter().filter(record)
    text = logging.Formatter().format(record)
    assert "F1lterS3cret" not in text and "pw=***" in text


@pytest.mark.parametrize("logger", ["pika.adapters.blocking_connection", "kombu.x", "stomp.py"])
def test_driver_loggers_are_masked(logger: str) -> None:
    remember("Dr1verS3cret")
    with every_log_record() as records:
        logging.getLogger(logger).debug("params %r", {"password": "Dr1verS3cret"})
        logging.getLogger("someone.else").debug("not a driver")
    assert records and not find_leaks("Dr1verS3cret", records)
    assert any("someone.else" in r for r in records)


@settings(max_examples=50, deadline=None)
@given(password=SECRETS)
def test_memory_connect_errors_and_repr_hide_the_password(password: str) -> None:
    url = BusURL("memory", (HostPort("x"),), "ana", password).render(hide_password=False)
    with every_log_record() as records:
        try:
            bus = msgbus.connect(url)
        except msgbus.MsgBusError as exc:
            texts = [str(exc), repr(exc)]
        else:  # pragma: no cover - memory takes no credentials
            texts = [repr(bus)]
            bus.close()
    assume(texts)
    assert not find_leaks(password, texts + records, anchors=ANCHORS)


@settings(max_examples=100, deadline=None)
@given(secret=SECRETS)
def test_driver_records_are_masked_however_the_secret_is_shown(secret: str) -> None:
    """Drivers log frames as bytes reprs, parameters as dict reprs, URLs percent-encoded."""
    from urllib.parse import quote

    remember(secret)
    with every_log_record() as records:
        log = logging.getLogger("stomp.py")
        log.debug("sending frame: %r", [b"passcode:" + secret.encode("utf-8", "surrogatepass")])
        log.debug("params %r", {"password": secret})
        log.debug("url amqp://u:%s@h/", quote(secret, safe=""))
        log.debug("plain %s", secret)
    assert len(records) == 4 and not find_leaks(secret, records, anchors=ANCHORS)


def test_overlapping_secrets_leave_no_part_of_either() -> None:
    remember("Pw7x/", "Pw7x/Qz9k-tail")
    assert mask("a Pw7x/Qz9k-tail b") == "a *** b"
    remember("xy:Pw", "Pw-longer-secret")
    assert mask("[xy:Pw-longer-secret]") == "[***]"


def test_the_bench_report_shows_urls_without_secrets() -> None:
    from msgbus.bench.targets import Target, url_target

    url = "amqp://ana:Pw7x-bench@127.0.0.1:5672/?password=Qz9k-bench&heartbeat=30"
    target = Target("rabbitmq", "rabbitmq", url)
    shown = [target.display_url(), url_target(url).description]
    assert not any("Pw7x-bench" in s or "Qz9k-bench" in s for s in shown)
    assert "heartbeat=30" in shown[0]


def test_a_very_short_password_does_not_garble_every_message() -> None:
    remember("p")
    assert mask("kafka option 'partitions' must be positive") == (
        "kafka option 'partitions' must be positive"
    )
    shown = BusURL.parse("amqp://u:p@127.0.0.1:5672/").render()
    assert ":p@" not in shown  # where the URL says it is a password, it is hidden
