"""Where the Apache Kafka broker's jars come from: ``KAFKA_HOME``, or Maven Central via ``mvn``.

Apache Kafka publishes its broker as ordinary Maven artifacts
(``org.apache.kafka:kafka_2.13:<version>`` and its runtime dependencies). The first time a
version is needed, :func:`kafka_libs` writes a one-dependency ``pom.xml`` and runs
``mvn dependency:copy-dependencies`` into ``~/.cache/msgbus/kafka/<version>/libs`` (honours
``XDG_CACHE_HOME``); later runs, other test environments and other processes reuse that
folder (a file lock serialises concurrent assemblies). ``KAFKA_HOME`` pointing at an unpacked
official distribution is used instead when set. Standard library only.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from msgbus.testing.brokers.base import BrokerNotInstalled

__all__ = [
    "KAFKA_VERSION",
    "KafkaDistribution",
    "apache_kafka_can_run",
    "cache_root",
    "find_java",
    "java_major_version",
    "kafka_libs",
]

KAFKA_VERSION = "4.1.1"
"""The Apache Kafka release the harness runs unless ``MSGBUS_KAFKA_VERSION`` says otherwise.

4.1 is a current release line: KRaft only (no ZooKeeper to run), Java 17 (the machines'
default JDK), and the protocol versions kafka-python 3.0 negotiates (Kafka 4.0 removed the
pre-2.1 ones, which is exactly what a modern client must cope with)."""

SCALA_VERSION = "2.13"
_LOG4J_VERSION = "2.24.3"  # the log4j2 Kafka 4.1 itself depends on; the SLF4J 1.x binding
JAVA_INSTALL_HINT = "apt-get install -y openjdk-17-jre-headless maven"
MAVEN_INSTALL_HINT = "apt-get install -y maven (or set KAFKA_HOME to an unpacked Kafka release)"
_COMPLETE = ".complete"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>msgbus.harness</groupId>
  <artifactId>apache-kafka-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{scala}</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""


@dataclass(frozen=True)
class KafkaDistribution:
    """The jars of one Apache Kafka broker release and where they came from."""

    version: str
    """The release, e.g. ``4.1.1`` (read from the ``kafka_2.13-*.jar`` name)."""
    libs: Path
    """Folder holding every jar of the broker's class path."""
    source: str
    """``KAFKA_HOME=…`` or ``Maven Central (cached in …)``."""

    @property
    def classpath(self) -> str:
        """The ``java -cp`` argument: every jar of :attr:`libs`."""
        return str(self.libs / "*")


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/msgbus`` or ``~/.cache/msgbus``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "msgbus"


def find_java() -> str | None:
    """``$JAVA_HOME/bin/java`` when it exists, else ``java`` on PATH, else None."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def java_major_version(java: str) -> int | None:
    """The major version ``java -version`` reports (17 for ``"17.0.15"``), or None."""
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def _version_of(libs: Path) -> str | None:
    for jar in libs.glob(f"kafka_{SCALA_VERSION}-*.jar"):
        match = re.fullmatch(rf"kafka_{SCALA_VERSION}-(\d[\w.\-]*)\.jar", jar.name)
        if match and "test" not in jar.name and "sources" not in jar.name:
            return match.group(1)
    return None


def _from_kafka_home(home: str) -> KafkaDistribution:
    libs = Path(home) / "libs"
    version = _version_of(libs) if libs.is_dir() else None
    if version is None:
        raise BrokerNotInstalled(
            "Apache Kafka",
            f"KAFKA_HOME={home} has no libs/kafka_{SCALA_VERSION}-*.jar",
            "unset KAFKA_HOME, or point it at an unpacked Apache Kafka release",
        )
    return KafkaDistribution(version, libs, f"KAFKA_HOME={home}")


def kafka_libs(version: str | None = None, *, fetch: bool = True) -> KafkaDistribution:
    """The broker's jars: ``KAFKA_HOME``'s, or ``version`` (default ``MSGBUS_KAFKA_VERSION``,
    else :data:`KAFKA_VERSION`) from the cache, assembled with ``mvn`` first if missing.

    With ``fetch=False`` nothing is downloaded. Raises
    :class:`~msgbus.testing.brokers.BrokerNotInstalled` when the jars are missing and cannot
    be fetched (no ``mvn``, or Maven failed: its last output lines are in the message).
    """
    home = os.environ.get("KAFKA_HOME", "").strip()
    if home:
        return _from_kafka_home(home)
    version = version or os.environ.get("MSGBUS_KAFKA_VERSION", "").strip() or KAFKA_VERSION
    folder = cache_root() / "kafka" / version
    libs = folder / "libs"
    if (folder / _COMPLETE).is_file():
        return KafkaDistribution(version, libs, f"Maven Central (cached in {folder})")
    if not fetch:
        raise BrokerNotInstalled(
            f"Apache Kafka {version}", f"no assembled broker in {folder}", MAVEN_INSTALL_HINT
        )
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerNotInstalled(
            f"Apache Kafka {version}",
            "no mvn on PATH to fetch it from Maven Central",
            MAVEN_INSTALL_HINT,
        )
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be assembling it right now
        if not (folder / _COMPLETE).is_file():
            _assemble(mvn, version, folder)
    return KafkaDistribution(version, libs, f"Maven Central (cached in {folder})")


def _assemble(mvn: str, version: str, folder: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="assemble-", dir=folder))
    try:
        pom = work / "pom.xml"
        pom.write_text(_POM.format(scala=SCALA_VERSION, version=version, log4j=_LOG4J_VERSION))
        argv = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={work / 'libs'}",
        ]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
        except subprocess.TimeoutExpired:
            raise BrokerNotInstalled(
                f"Apache Kafka {version}", "mvn did not finish within 900 s", MAVEN_INSTALL_HINT
            ) from None
        if done.returncode != 0 or _version_of(work / "libs") != version:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            raise BrokerNotInstalled(
                f"Apache Kafka {version}",
                f"`{' '.join(argv)}` failed (exit {done.returncode}):\n{tail}",
                MAVEN_INSTALL_HINT,
            )
        shutil.rmtree(folder / "libs", ignore_errors=True)
        (work / "libs").rename(folder / "libs")
        (folder / _COMPLETE).write_text(version + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def apache_kafka_can_run() -> str | None:
    """None when Apache Kafka can start here without asking anything new of the machine
    (Java 17+, and ``KAFKA_HOME``, cached jars or ``mvn``); else why not, in a few words."""
    java = find_java()
    if java is None:
        return "no java on PATH"
    major = java_major_version(java)
    if major is None or major < 17:
        return f"{java} is Java {major}, Kafka 4 needs 17+"
    try:
        kafka_libs(fetch=False)
    except BrokerNotInstalled:
        if shutil.which("mvn") is None:
            return "no mvn to fetch its jars from Maven Central, and none cached"
    return None
