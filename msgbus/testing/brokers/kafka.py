"""Apache Kafka itself, in KRaft mode, as a child process: the reference Kafka broker.

The broker's jars come from Maven Central through ``mvn`` into a cache folder, or from
``KAFKA_HOME`` (see :mod:`msgbus.testing.brokers.kafka_dist`); ``java`` (17 or newer) runs
``kafka.Kafka`` with a generated ``server.properties``. One node is both controller and
broker; the storage is formatted once in the data folder, so ``restart()`` and ``kill()`` +
``start()`` keep every record that was acknowledged (Kafka's own on-disk log).

Settings for tests: replication factor 1 for the internal topics, no initial rebalance delay
(``group.initial.rebalance.delay.ms=0``), topics auto-created with 3 partitions.
``Kafka(tls=True)`` also opens an SSL listener, a SASL_PLAINTEXT and a SASL_SSL listener
(SASL mechanisms PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 for the user :attr:`Kafka.sasl_username`),
with a throwaway CA (:class:`~msgbus.testing.brokers.TlsFiles`).

Readiness: ApiVersions then Metadata on the plaintext listener, whose broker list must
advertise 127.0.0.1 and that port.
"""

from __future__ import annotations

import base64
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

from msgbus.testing.brokers.base import (
    HOST,
    BrokerNotInstalled,
    BrokerStartError,
    ProcessSpec,
)
from msgbus.testing.brokers.kafka_dist import (
    JAVA_INSTALL_HINT,
    KafkaDistribution,
    find_java,
    java_major_version,
    kafka_libs,
)
from msgbus.testing.brokers.kafka_wire import KafkaProtocolBroker
from msgbus.testing.brokers.tls import TlsFiles, make_tls_files

__all__ = ["ApacheKafka", "Kafka"]

_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = console
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.console.ref = console
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


class Kafka(KafkaProtocolBroker):
    """Apache Kafka (KRaft, one node) on 127.0.0.1 (``url``: ``kafka://127.0.0.1:PORT``).

    ``description`` names the release and where its jars came from. With ``tls=True``:
    :attr:`tls_url` (SSL), :attr:`sasl_url` (SASL_PLAINTEXT) and :attr:`sasl_ssl_url`
    (SASL_SSL) besides :attr:`url`, and :attr:`tls_files`. See
    :class:`~msgbus.testing.brokers.base.BrokerProcess` for the lifecycle.
    """

    product = "Apache Kafka"
    install_hint = JAVA_INSTALL_HINT
    default_startup_timeout = 120.0
    default_stop_timeout = 30.0

    sasl_username = "msgbus"
    """The user the SASL listeners know (PLAIN and both SCRAM mechanisms)."""
    sasl_password = "kafka-secret/?#@"
    """Its password (characters that need escaping in a URL, on purpose)."""

    @classmethod
    def _cluster(cls, *args: Any, **kwargs: Any) -> Any:
        """``nodes=N``: a :class:`~msgbus.testing.brokers.kafka_cluster.KafkaCluster`."""
        from msgbus.testing.brokers.kafka_cluster import KafkaCluster

        return KafkaCluster(*args, **kwargs)

    def __init__(
        self,
        port: int | None = None,
        *,
        nodes: int = 1,
        controller_port: int | None = None,
        tls: bool = False,
        version: str | None = None,
        heap: str = "512m",
        partitions: int = 3,
        data_dir: str | os.PathLike[str] | None = None,
        startup_timeout: float | None = None,
        stop_timeout: float | None = None,
        proxy_port: int | None = None,
    ) -> None:
        """``nodes``: a number above 1 builds the cluster launcher instead.
        ``port``: the PLAINTEXT listener (None: a free port below 32768);
        ``controller_port``: the KRaft controller listener (None: a free port). ``tls``: also
        open SSL, SASL_PLAINTEXT and SASL_SSL listeners. ``version``: the Apache Kafka release
        (None: ``MSGBUS_KAFKA_VERSION`` or the harness default). ``heap``: the JVM's ``-Xmx``.
        ``partitions``: ``num.partitions`` for auto-created topics. ``proxy_port``: also open
        a ``CLIENT`` listener (on :attr:`proxied_port`) that the broker advertises as
        ``127.0.0.1:proxy_port``, where a fault proxy is to forward to it — a Kafka client
        connects to advertised addresses, so only then does all its traffic cross the proxy
        (:mod:`msgbus.testing.faults`). Other parameters: see :class:`BrokerProcess`."""
        super().__init__(
            port, data_dir=data_dir, startup_timeout=startup_timeout, stop_timeout=stop_timeout
        )
        self.controller_port = controller_port
        self.tls = tls
        self.version = version
        self.heap = heap
        self.partitions = partitions
        self.proxy_port = proxy_port
        self.proxied_port: int | None = None
        """The real port of the ``CLIENT`` listener (``proxy_port`` given only)."""
        self.ssl_port: int | None = None
        self.sasl_port: int | None = None
        self.sasl_ssl_port: int | None = None
        self._dist: KafkaDistribution | None = None
        self._java: str | None = None

    # ------------------------------------------------------------------ URLs

    @property
    def tls_files(self) -> TlsFiles:
        """The throwaway CA, server and client certificates (``tls=True`` only)."""
        self._require_tls()
        return TlsFiles.in_folder(self.data_dir / "tls")

    @property
    def tls_url(self) -> str:
        """The SSL listener: ``kafka://127.0.0.1:P?security_protocol=ssl&ssl_cafile=CA``."""
        self._require_tls()
        return (
            f"kafka://{HOST}:{self.ssl_port}?security_protocol=ssl"
            f"&ssl_cafile={quote(str(self.tls_files.ca))}"
        )

    def sasl_url(self, mechanism: str = "scram-sha-256") -> str:
        """The SASL_PLAINTEXT listener with this broker's user and password in the URL."""
        self._require_tls()
        return (
            f"kafka://{self._userinfo()}@{HOST}:{self.sasl_port}"
            f"?security_protocol=sasl_plaintext&sasl_mechanism={mechanism}"
        )

    def sasl_ssl_url(self, mechanism: str = "scram-sha-512") -> str:
        """The SASL_SSL listener (user and password in the URL, the CA as ``ssl_cafile``)."""
        self._require_tls()
        return (
            f"kafka://{self._userinfo()}@{HOST}:{self.sasl_ssl_port}"
            f"?security_protocol=sasl_ssl&sasl_mechanism={mechanism}"
            f"&ssl_cafile={quote(str(self.tls_files.ca))}"
        )

    def _userinfo(self) -> str:
        return f"{quote(self.sasl_username, safe='')}:{quote(self.sasl_password, safe='')}"

    def _require_tls(self) -> None:
        if not self.tls:
            raise BrokerStartError("this Kafka was started without tls=True")

    @property
    def description(self) -> str:
        """E.g. ``Apache Kafka 4.1.1 (KRaft, one node, on-disk log; jars from Maven Central
        (cached in …))``."""
        dist = self._dist
        version = f" {dist.version}" if dist is not None else ""
        source = f"; jars from {dist.source}" if dist is not None else ""
        listeners = ", TLS and SASL listeners" if self.tls else ""
        return f"Apache Kafka{version} (KRaft, one node, on-disk log{listeners}{source})"

    # ------------------------------------------------------------------ hooks

    def check_installed(self) -> None:
        """Raise :class:`BrokerNotInstalled` without Java 17+, or without the broker's jars
        and a way to fetch them (``mvn``); fetches them on first use (minutes)."""
        java = find_java()
        if java is None:
            raise BrokerNotInstalled("Apache Kafka", "no java on PATH", JAVA_INSTALL_HINT)
        major = java_major_version(java)
        if major is None or major < 17:
            raise BrokerNotInstalled(
                "Apache Kafka", f"{java} is Java {major}, Kafka 4 needs 17+", JAVA_INSTALL_HINT
            )
        self._java = java
        if self._dist is None:
            self._dist = kafka_libs(self.version)

    @property
    def proxy_url(self) -> str:
        """``kafka://127.0.0.1:proxy_port``: the address clients use through the proxy."""
        if self.proxy_port is None:
            raise BrokerStartError("this Kafka was started without proxy_port")
        return f"kafka://{HOST}:{self.proxy_port}"

    def _assign_ports(self) -> None:
        self._pick("controller_port")
        if self.proxy_port is not None:
            self._pick("proxied_port")
        if self.tls:
            self._pick("ssl_port")
            self._pick("sasl_port")
            self._pick("sasl_ssl_port")

    def _extra_ports(self) -> list[int]:
        ports = [
            self.controller_port,
            self.proxied_port,
            self.ssl_port,
            self.sasl_port,
            self.sasl_ssl_port,
        ]
        return [p for p in ports if p is not None]

    def _listeners(self) -> dict[str, int]:
        listeners = {"PLAINTEXT": self.port}
        if self.tls:
            assert self.ssl_port and self.sasl_port and self.sasl_ssl_port
            listeners.update(
                SSL=self.ssl_port, SASL_PLAINTEXT=self.sasl_port, SASL_SSL=self.sasl_ssl_port
            )
        if self.proxy_port is not None:
            assert self.proxied_port
            listeners["CLIENT"] = self.proxied_port
        return listeners

    def _properties(self) -> dict[str, str]:
        listeners = self._listeners()
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{HOST}:{self.controller_port}",
            "listeners": ",".join(
                [
                    *(f"{n}://{HOST}:{p}" for n, p in listeners.items()),
                    f"CONTROLLER://{HOST}:{self.controller_port}",
                ]
            ),
            "advertised.listeners": ",".join(
                f"{n}://{HOST}:{self.proxy_port if n == 'CLIENT' else p}"
                for n, p in listeners.items()
            ),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": ",".join(
                [
                    *(f"{n}:{'PLAINTEXT' if n == 'CLIENT' else n}" for n in listeners),
                    "CONTROLLER:PLAINTEXT",
                ]
            ),
            "log.dirs": str(self.data_dir / "log"),
            "num.partitions": str(self.partitions),
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.flush.interval.messages": str(2**62),  # Kafka's default: the OS page cache
        }
        if self.tls:
            files = make_tls_files(self.data_dir / "tls")
            keystore = self.data_dir / "tls" / "server-keystore.pem"
            keystore.write_text(files.server_key.read_text() + files.server_cert.read_text())
            props.update(
                {
                    "ssl.keystore.type": "PEM",
                    "ssl.keystore.location": str(keystore),
                    "ssl.truststore.type": "PEM",
                    "ssl.truststore.location": str(files.ca),
                    "ssl.client.auth": "none",
                    "sasl.enabled.mechanisms": ",".join(_SASL_MECHANISMS),
                }
            )
            user, password = self.sasl_username, self.sasl_password
            for listener in ("sasl_plaintext", "sasl_ssl"):
                prefix = f"listener.name.{listener}"
                props[f"{prefix}.plain.sasl.jaas.config"] = (
                    "org.apache.kafka.common.security.plain.PlainLoginModule required "
                    f'user_{user}="{_jaas_escape(password)}";'
                )
                for mechanism in ("scram-sha-256", "scram-sha-512"):
                    props[f"{prefix}.{mechanism}.sasl.jaas.config"] = (
                        "org.apache.kafka.common.security.scram.ScramLoginModule required;"
                    )
        return props

    def _write_config(self) -> None:
        config = self.data_dir / "config"
        config.mkdir(parents=True, exist_ok=True)
        lines = [f"{key}={_escape_property(value)}" for key, value in self._properties().items()]
        (config / "server.properties").write_text("\n".join(lines) + "\n")
        (config / "log4j2.properties").write_text(_LOG4J2)
        if not (self.data_dir / "log" / "meta.properties").is_file():
            self._format_storage(config / "server.properties")

    def _java_argv(self, main: str) -> list[str]:
        assert self._java is not None and self._dist is not None
        return [
            self._java,
            f"-Xmx{self.heap}",
            "-Xss1m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'config' / 'log4j2.properties'}",
            "-cp",
            self._dist.classpath,
            main,
        ]

    def _format_storage(self, properties: Path) -> None:
        """``StorageTool format`` once per data folder (with the SCRAM users when ``tls``)."""
        cluster_id = self._cluster_id()
        argv = [
            *self._java_argv("kafka.tools.StorageTool"),
            "format",
            f"--cluster-id={cluster_id}",  # one argument: an id may start with "-"
            "-c",
            str(properties),
        ]
        if self.tls:
            for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
                argv += [
                    "--add-scram",
                    f"{mechanism}=[name={self.sasl_username},"
                    f"password={_scram_quote(self.sasl_password)}]",
                ]
        log = self.log_dir / "format.log"
        with open(log, "w") as out:
            done = subprocess.run(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self._base_env(),
                timeout=self.startup_timeout,
                check=False,
            )
        if done.returncode != 0:
            raise BrokerStartError(
                f"formatting Kafka storage failed (exit {done.returncode})", self.log_tail()
            )

    def _cluster_id(self) -> str:
        """The KRaft cluster id the storage is formatted with (a new random one here)."""
        return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")

    def _main_spec(self) -> ProcessSpec:
        return ProcessSpec(
            name="kafka",
            argv=[
                *self._java_argv("kafka.Kafka"),
                str(self.data_dir / "config" / "server.properties"),
            ],
            env=self._base_env(),
            cwd=self.data_dir,
            log_path=self.log_dir / "kafka.log",
        )

    def _handshake(self, timeout: float) -> str | None:
        self._check_advertised(timeout)
        return self._dist.version if self._dist is not None else None


ApacheKafka = Kafka
"""The same launcher under the name the issue tracker and docs use."""


def _escape_property(value: str) -> str:
    """Escape a value for a Java ``.properties`` file (backslashes and line breaks)."""
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _jaas_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _scram_quote(value: str) -> str:
    """A value in StorageTool's ``--add-scram`` syntax (quoted when it has ``,`` ``]`` …)."""
    return '"' + value.replace('"', '\\"') + '"'
