"""A private ActiveMQ Classic broker (Debian package ``activemq``) as a child process.

The broker runs as ``java ... -jar /usr/share/activemq/bin/activemq.jar start
xbean:file:<data>/conf/activemq.xml`` in the foreground, with the ``--add-opens`` flags of
Debian's ``/usr/bin/activemq``, logging through log4j 1.2 (the Debian build ignores
``log4j2.properties``). The generated ``activemq.xml`` puts STOMP (and, if asked, OpenWire) on
127.0.0.1, KahaDB in the data folder (journal fsync on), JMX, advisories and the scheduler off.
Readiness is a STOMP ``CONNECT`` answered by ``CONNECTED``.

``ActiveMQ(tls=True)`` also opens a ``stomp+ssl`` connector (``tls_url``) on 127.0.0.1, with
certificates made for this instance by ``openssl`` in ``<data_dir>/tls`` (see
:mod:`msgbus.testing.brokers.tls`), a PKCS12 keystore (``openssl pkcs12``) and a PKCS12
truststore holding the CA (``keytool``, from the JDK) referenced by an ``<sslContext>`` in
``activemq.xml``; readiness then also needs the STOMP handshake over TLS, checked against
that CA.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any

from msgbus.testing.brokers.base import (
    HOST,
    BrokerHarnessError,
    BrokerNotInstalled,
    BrokerProcess,
    HandshakeError,
    ProcessSpec,
)
from msgbus.testing.brokers.tls import TlsFiles, check_openssl, client_context, make_tls_files

__all__ = ["ActiveMQ", "stomp_handshake"]

DEFAULT_HOME = "/usr/share/activemq"
INSTALL_HINT = "apt-get update && apt-get install -y activemq"

_JAVA_MODULE_FLAGS = (
    "--add-reads=java.xml=java.logging",
    "--add-opens",
    "java.base/java.security=ALL-UNNAMED",
    "--add-opens",
    "java.base/java.net=ALL-UNNAMED",
    "--add-opens",
    "java.base/java.lang=ALL-UNNAMED",
    "--add-opens",
    "java.base/java.util=ALL-UNNAMED",
    "--add-opens",
    "java.naming/javax.naming.spi=ALL-UNNAMED",
    "--add-opens",
    "java.rmi/sun.rmi.transport.tcp=ALL-UNNAMED",
    "--add-opens",
    "java.base/java.util.concurrent=ALL-UNNAMED",
    "--add-opens",
    "java.base/java.util.concurrent.atomic=ALL-UNNAMED",
    "--add-exports=java.base/sun.net.www.protocol.http=ALL-UNNAMED",
    "--add-exports=java.base/sun.net.www.protocol.https=ALL-UNNAMED",
    "--add-exports=java.base/sun.net.www.protocol.jar=ALL-UNNAMED",
    "--add-exports=jdk.xml.dom/org.w3c.dom.html=ALL-UNNAMED",
    "--add-exports=jdk.naming.rmi/com.sun.jndi.url.rmi=ALL-UNNAMED",
)

_ACTIVEMQ_XML = """\
<!-- Private ActiveMQ broker for msgbus tests, written by msgbus.testing.brokers.
     Ports come from -Dmsgbus.stomp.port / -Dmsgbus.openwire.port, state lives under
     -Dactivemq.data (KahaDB, default durable settings: journal fsync on). -->
<beans
  xmlns="http://www.springframework.org/schema/beans"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.springframework.org/schema/beans
  http://www.springframework.org/schema/beans/spring-beans.xsd
  http://activemq.apache.org/schema/core
  http://activemq.apache.org/schema/core/activemq-core.xsd">

    <bean class="org.springframework.beans.factory.config.PropertyPlaceholderConfigurer"/>

    <broker xmlns="http://activemq.apache.org/schema/core"
            useJmx="false"
            brokerName="msgbus"
            schedulerSupport="true"
            advisorySupport="false"
            dataDirectory="${activemq.data}">

        <persistenceAdapter>
            <kahaDB directory="${activemq.data}/kahadb"/>
        </persistenceAdapter>

        <systemUsage>
            <systemUsage>
                <memoryUsage><memoryUsage percentOfJvmHeap="70"/></memoryUsage>
                <storeUsage><storeUsage limit="2 gb"/></storeUsage>
                <tempUsage><tempUsage limit="1 gb"/></tempUsage>
            </systemUsage>
        </systemUsage>

        <transportConnectors>
            <transportConnector name="stomp"
                uri="stomp://127.0.0.1:${msgbus.stomp.port}?transport.closeAsync=false"/>
%(openwire)s%(tls_connector)s        </transportConnectors>
%(ssl_context)s    </broker>
</beans>
"""

_OPENWIRE_CONNECTOR = """\
            <transportConnector name="openwire" uri="tcp://127.0.0.1:${msgbus.openwire.port}"/>
"""

_TLS_CONNECTOR = """\
            <transportConnector name="stomp+ssl"
                uri="stomp+ssl://127.0.0.1:${msgbus.stomp.ssl.port}?%(options)s"/>
"""

_SSL_CONTEXT = """\
        <sslContext>
            <sslContext keyStore="file:%(keystore)s" keyStorePassword="%(password)s"
                keyStoreType="pkcs12" trustStore="file:%(truststore)s"
                trustStorePassword="%(password)s" trustStoreType="pkcs12"/>
        </sslContext>
"""

_STORE_PASSWORD = "msgbus-test"
"""Password of the throwaway PKCS12 key and trust stores (they hold test keys only)."""

_LOG4J_PROPERTIES = """\
# The Debian activemq package logs through slf4j-log4j12 + log4j 1.2, not log4j2.
log4j.rootLogger=INFO, logfile, stdout
log4j.logger.org.apache.activemq.spring=WARN
log4j.logger.org.springframework=WARN
log4j.logger.org.apache.xbean=WARN
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.Threshold=WARN
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=%5p | %m%n
log4j.appender.logfile=org.apache.log4j.RollingFileAppender
log4j.appender.logfile.file=${activemq.data}/activemq.log
log4j.appender.logfile.maxFileSize=1024KB
log4j.appender.logfile.maxBackupIndex=2
log4j.appender.logfile.layout=org.apache.log4j.PatternLayout
log4j.appender.logfile.layout.ConversionPattern=%d | %-5p | %m | %c | %t%n
"""


def _read_frame(sock: socket.socket, buffer: bytearray) -> bytes:
    """Read one STOMP frame (up to its NUL), skipping heart-beat newlines."""
    while True:
        while bytes(buffer[:1]) in (b"\n", b"\r"):
            del buffer[:1]
        end = buffer.find(b"\x00")
        if end >= 0:
            frame = bytes(buffer[:end])
            del buffer[: end + 1]
            return frame
        chunk = sock.recv(4096)
        if not chunk:
            raise HandshakeError("connection closed before a complete STOMP frame")
        buffer += chunk


def stomp_handshake(
    host: str,
    port: int,
    *,
    login: str | None = None,
    passcode: str | None = None,
    timeout: float = 5.0,
    ssl_context: ssl.SSLContext | None = None,
) -> dict[str, str]:
    """Send STOMP ``CONNECT`` (accept-version 1.0-1.2), require ``CONNECTED``, then
    ``DISCONNECT`` with a receipt and wait for the ``RECEIPT``.

    Returns the CONNECTED headers (``server`` is e.g. ``ActiveMQ/5.17.2``). Raises OSError
    when the port does not answer and :class:`HandshakeError` on an ``ERROR`` frame or
    anything that is not STOMP. With ``ssl_context`` the handshake runs over TLS (server
    certificate and host name checked by the context; a TLS failure is an ``ssl.SSLError``).
    """
    headers = ["accept-version:1.0,1.1,1.2", "host:localhost", "heart-beat:0,0"]
    if login is not None:
        headers.append(f"login:{login}")
    if passcode is not None:
        headers.append(f"passcode:{passcode}")
    with contextlib.ExitStack() as stack:
        sock = stack.enter_context(socket.create_connection((host, port), timeout=timeout))
        if ssl_context is not None:
            sock = stack.enter_context(ssl_context.wrap_socket(sock, server_hostname=host))
        sock.settimeout(timeout)
        sock.sendall(("CONNECT\n" + "\n".join(headers) + "\n\n\x00").encode())
        buffer = bytearray()
        frame = _read_frame(sock, buffer).decode("utf-8", "replace")
        command, _, rest = frame.partition("\n")
        head = rest.split("\n\n", 1)[0]
        parsed = dict(line.split(":", 1) for line in head.splitlines() if ":" in line)
        if command.strip() != "CONNECTED":
            raise HandshakeError(f"STOMP CONNECT answered by {command!r}: {parsed}")
        sock.sendall(b"DISCONNECT\nreceipt:msgbus-bye\n\n\x00")
        reply = _read_frame(sock, buffer).decode("utf-8", "replace")
        if not reply.startswith("RECEIPT"):
            raise HandshakeError(f"STOMP DISCONNECT answered by {reply[:40]!r}")
        return parsed


class ActiveMQ(BrokerProcess):
    """A private ActiveMQ Classic broker with a STOMP connector on 127.0.0.1.

    Persistent: persistent messages in queues survive ``restart()``, ``kill()`` + ``start()``
    and ``stop()`` + ``start()`` (KahaDB in ``data_dir``). ``url`` is
    ``stomp://127.0.0.1:PORT``. With ``tls`` there is also a ``stomp+ssl`` connector:
    ``tls_url`` is ``stomp+ssl://127.0.0.1:TLS_PORT`` and ``tls_files`` holds the CA, server
    and client certificates. See :class:`~msgbus.testing.brokers.base.BrokerProcess` for the
    lifecycle.
    """

    kind = "activemq"
    product = "ActiveMQ"
    install_hint = INSTALL_HINT
    default_startup_timeout = 60.0
    default_stop_timeout = 15.0

    @classmethod
    def _cluster(cls, *args: Any, **kwargs: Any) -> Any:
        """``nodes=N``: an :class:`~msgbus.testing.brokers.activemq_cluster.ActiveMQCluster`."""
        from msgbus.testing.brokers.activemq_cluster import ActiveMQCluster

        return ActiveMQCluster(*args, **kwargs)

    def __init__(
        self,
        port: int | None = None,
        *,
        nodes: int = 1,
        data_dir: str | os.PathLike[str] | None = None,
        openwire_port: int | None = None,
        activemq_home: str | os.PathLike[str] = DEFAULT_HOME,
        java: str | os.PathLike[str] | None = None,
        heap: str = "512m",
        startup_timeout: float | None = None,
        stop_timeout: float | None = None,
        tls: bool | TlsFiles = False,
        tls_port: int | None = None,
        tls_require_client_cert: bool = False,
    ) -> None:
        """``nodes``: a number above 1 builds the cluster launcher instead.
        ``port``: the STOMP port (None: free port below 32768). ``openwire_port``: also
        open an OpenWire connector there (None: no OpenWire). ``activemq_home``: the install
        holding ``bin/activemq.jar``; ``java``: the java binary (None: ``java`` on PATH);
        ``heap``: JVM ``-Xms``/``-Xmx``. ``tls``: True opens a ``stomp+ssl`` connector on
        ``tls_port`` (None: a free port) with certificates made at first start in
        ``<data_dir>/tls``; a :class:`~msgbus.testing.brokers.tls.TlsFiles` uses those files
        instead. The connector verifies a client certificate when one is presented
        (``wantClientAuth``); ``tls_require_client_cert`` refuses clients without one
        (``needClientAuth``, mutual TLS). Other parameters: see :class:`BrokerProcess`."""
        super().__init__(
            port, data_dir=data_dir, startup_timeout=startup_timeout, stop_timeout=stop_timeout
        )
        self.openwire_port = openwire_port
        self.activemq_home = Path(activemq_home)
        self.java = Path(java) if java is not None else None
        self.heap = heap
        self.tls = bool(tls)
        self.tls_port = tls_port if self.tls else None
        self.tls_require_client_cert = tls_require_client_cert
        self._tls_files: TlsFiles | None = tls if isinstance(tls, TlsFiles) else None

    @property
    def url(self) -> str:
        """``stomp://127.0.0.1:PORT``."""
        return f"stomp://{HOST}:{self.port}"

    @property
    def tls_url(self) -> str:
        """``stomp+ssl://127.0.0.1:TLS_PORT``. Raises :class:`BrokerHarnessError` when the
        broker has no TLS connector (or before the first ``start()``)."""
        if self.tls_port is None:
            raise BrokerHarnessError("ActiveMQ: no TLS connector (start it with tls=True)")
        return f"stomp+ssl://{HOST}:{self.tls_port}"

    @property
    def tls_files(self) -> TlsFiles:
        """The CA, server and client certificates of the TLS connector. Raises
        :class:`BrokerHarnessError` without ``tls`` (or before the first ``start()``)."""
        if self._tls_files is None:
            raise BrokerHarnessError("ActiveMQ: no TLS files (start it with tls=True)")
        return self._tls_files

    @property
    def description(self) -> str:
        """E.g. ``ActiveMQ Classic 5.17.2 (STOMP), KahaDB persistence on disk``."""
        version = f" {self._version}" if self._version else ""
        tls = f", STOMP over TLS on port {self.tls_port}" if self.tls_port is not None else ""
        return f"ActiveMQ Classic{version} (STOMP), KahaDB persistence on disk{tls}"

    def _java(self) -> Path | None:
        if self.java is not None:
            return self.java
        found = shutil.which("java")
        return Path(found) if found else None

    def check_installed(self) -> None:
        """Raise :class:`BrokerNotInstalled` unless java and ``bin/activemq.jar`` exist."""
        jar = self.activemq_home / "bin" / "activemq.jar"
        if not jar.is_file():
            raise BrokerNotInstalled("ActiveMQ", f"no {jar}", self.install_hint)
        java = self._java()
        if java is None or not (java.is_file() and os.access(java, os.X_OK)):
            raise BrokerNotInstalled(
                "ActiveMQ", f"no java binary ({java or 'not on PATH'})", self.install_hint
            )
        if self.tls:
            if self._tls_files is None:
                check_openssl()
            if self._keytool() is None:
                raise BrokerNotInstalled(
                    "ActiveMQ", "no keytool (JDK) for the TLS truststore", self.install_hint
                )

    def _keytool(self) -> Path | None:
        java = self._java()
        if java is not None:
            beside = java.resolve().parent / "keytool"
            if beside.is_file() and os.access(beside, os.X_OK):
                return beside
        found = shutil.which("keytool")
        return Path(found) if found else None

    def _assign_ports(self) -> None:
        if self.tls:
            self._pick("tls_port")

    def _extra_ports(self) -> list[int]:
        return [p for p in (self.openwire_port, self.tls_port) if p is not None]

    @property
    def _conf_dir(self) -> Path:
        return self.data_dir / "conf"

    def _write_config(self) -> None:
        conf = self._conf_dir
        conf.mkdir(parents=True, exist_ok=True)
        openwire = _OPENWIRE_CONNECTOR if self.openwire_port is not None else ""
        tls_connector = ssl_context = ""
        if self.tls:
            keystore, truststore = self._make_stores()
            client_auth = "needClientAuth" if self.tls_require_client_cert else "wantClientAuth"
            options = f"transport.closeAsync=false&amp;{client_auth}=true"
            tls_connector = _TLS_CONNECTOR % {"options": options}
            ssl_context = _SSL_CONTEXT % {
                "keystore": keystore,
                "truststore": truststore,
                "password": _STORE_PASSWORD,
            }
        (conf / "activemq.xml").write_text(
            _ACTIVEMQ_XML
            % {"openwire": openwire, "tls_connector": tls_connector, "ssl_context": ssl_context}
        )
        (conf / "log4j.properties").write_text(_LOG4J_PROPERTIES)
        (self.data_dir / "tmp").mkdir(exist_ok=True)

    def _make_stores(self) -> tuple[Path, Path]:
        """The broker's PKCS12 keystore (server key + chain) and truststore (the CA), made
        once per data folder next to the PEM files."""
        if self._tls_files is None:
            self._tls_files = make_tls_files(self.data_dir / "tls")
        files = self._tls_files
        folder = self.data_dir / "tls"
        folder.mkdir(parents=True, exist_ok=True)
        keystore, truststore = folder / "broker-keystore.p12", folder / "broker-truststore.p12"
        commands = []
        if not keystore.is_file():
            argv = [check_openssl(), "pkcs12", "-export", "-name", "broker"]
            argv += ["-in", str(files.server_cert), "-inkey", str(files.server_key)]
            argv += ["-certfile", str(files.ca), "-out", str(keystore)]
            argv += ["-passout", f"pass:{_STORE_PASSWORD}"]
            commands.append(argv)
        if not truststore.is_file():
            argv = [str(self._keytool()), "-importcert", "-noprompt", "-alias", "msgbus-ca"]
            argv += ["-file", str(files.ca), "-keystore", str(truststore)]
            argv += ["-storetype", "pkcs12", "-storepass", _STORE_PASSWORD]
            commands.append(argv)
        for argv in commands:
            try:
                subprocess.run(argv, check=True, capture_output=True, timeout=120)
            except subprocess.CalledProcessError as exc:
                output = (exc.stderr or exc.stdout or b"").decode("utf-8", "replace").strip()
                raise BrokerHarnessError(f"{argv[0]} {argv[1]} failed: {output}") from None
        return keystore, truststore

    def _main_spec(self) -> ProcessSpec:
        data = self.data_dir
        conf = self._conf_dir
        env = {k: v for k, v in self._base_env().items() if not k.startswith("ACTIVEMQ_")}
        for name in ("JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS", "_JAVA_OPTIONS"):
            env.pop(name, None)
        argv = [
            str(self._java()),
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-Djava.awt.headless=true",
            f"-Djava.io.tmpdir={data / 'tmp'}",
            "-Dorg.apache.activemq.UseDedicatedTaskRunner=false",
            *_JAVA_MODULE_FLAGS,
            f"-Dlog4j.configuration=file:{conf / 'log4j.properties'}",
            f"-Dactivemq.classpath={conf}",
            f"-Dactivemq.home={self.activemq_home}",
            f"-Dactivemq.base={data}",
            f"-Dactivemq.conf={conf}",
            f"-Dactivemq.data={data}",
            f"-Dmsgbus.stomp.port={self.port}",
        ]
        if self.openwire_port is not None:
            argv.append(f"-Dmsgbus.openwire.port={self.openwire_port}")
        if self.tls_port is not None:
            argv.append(f"-Dmsgbus.stomp.ssl.port={self.tls_port}")
        argv += [
            "-jar",
            str(self.activemq_home / "bin" / "activemq.jar"),
            "start",
            f"xbean:file:{conf / 'activemq.xml'}",
        ]
        return ProcessSpec(
            name="activemq",
            argv=argv,
            env=env,
            cwd=data,
            log_path=self.log_dir / "activemq-stdout.log",
        )

    def _handshake(self, timeout: float) -> str | None:
        headers = stomp_handshake(HOST, self.port, timeout=timeout)
        if self.tls_port is not None:
            stomp_handshake(
                HOST,
                self.tls_port,
                timeout=timeout,
                ssl_context=client_context(
                    self.tls_files, client_cert=self.tls_require_client_cert
                ),
            )
        server = headers.get("server", "")
        return server.split("/", 1)[1] if "/" in server else None

    def _log_files(self) -> list[Path]:
        files = super()._log_files()
        if self._data_dir is not None and (self.data_dir / "activemq.log").is_file():
            files.append(self.data_dir / "activemq.log")
        return files
