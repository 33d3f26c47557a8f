"""Throwaway TLS material for the broker launchers: a private CA, a server certificate for
127.0.0.1/localhost and a client certificate, made with the ``openssl`` command-line tool.

:func:`make_tls_files` writes them into a folder (the launchers use ``<data_dir>/tls``) and
returns a :class:`TlsFiles`; :func:`tls_handshake` is a readiness probe that completes a TLS
handshake and checks the server certificate against the CA. Keys are EC P-256 (fast to make,
understood by Erlang/OTP and Java). Only the standard library and ``openssl`` (Debian package
``openssl``) are used; Java keystores are made by the ActiveMQ launcher itself.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from msgbus.testing.brokers.base import BrokerNotInstalled

__all__ = ["OPENSSL_INSTALL_HINT", "TlsFiles", "client_context", "make_tls_files", "tls_handshake"]

OPENSSL_INSTALL_HINT = "apt-get update && apt-get install -y openssl"

_DAYS = "30"


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of one throwaway PKI: the CA, the server's certificate and key (valid for
    ``127.0.0.1`` and ``localhost``) and a client certificate and key signed by the same CA
    (for mutual TLS). Keys are unencrypted."""

    ca: Path
    """The CA certificate a client trusts (``cacertfile`` / ``ssl_ca_certs``)."""
    server_cert: Path
    """The server certificate (signed by :attr:`ca`)."""
    server_key: Path
    """The server's private key."""
    client_cert: Path
    """A client certificate signed by :attr:`ca` (``certfile`` / ``ssl_certfile``)."""
    client_key: Path
    """The client certificate's private key (``keyfile`` / ``ssl_keyfile``)."""

    @classmethod
    def in_folder(cls, folder: Path) -> TlsFiles:
        """The file names :func:`make_tls_files` uses in ``folder`` (nothing is created)."""
        return cls(
            ca=folder / "ca.pem",
            server_cert=folder / "server.pem",
            server_key=folder / "server.key",
            client_cert=folder / "client.pem",
            client_key=folder / "client.key",
        )

    def exist(self) -> bool:
        """True when every file is present."""
        return all(
            p.is_file()
            for p in (self.ca, self.server_cert, self.server_key, self.client_cert, self.client_key)
        )


def check_openssl() -> str:
    """Return the path of ``openssl``; raise :class:`BrokerNotInstalled` when it is missing."""
    found = shutil.which("openssl")
    if found is None:
        raise BrokerNotInstalled(
            "openssl (for the brokers' TLS listeners)", "no openssl on PATH", OPENSSL_INSTALL_HINT
        )
    return found


def _run(argv: list[str], cwd: Path) -> None:
    try:
        subprocess.run(argv, cwd=cwd, check=True, capture_output=True, timeout=60)
    except subprocess.CalledProcessError as exc:
        output = (exc.stderr or b"").decode("utf-8", "replace").strip()
        raise RuntimeError(f"{' '.join(argv[:3])} ... failed: {output}") from None


def make_tls_files(folder: Path) -> TlsFiles:
    """Create a CA, a server certificate (SAN ``IP:127.0.0.1``, ``DNS:localhost``) and a client
    certificate in ``folder`` (created if needed), unless they all exist already (so a
    restarted broker keeps the certificates its clients trust). Returns their paths.

    Raises :class:`BrokerNotInstalled` without ``openssl`` and RuntimeError (with openssl's
    message) when a command fails.
    """
    files = TlsFiles.in_folder(folder)
    if files.exist():
        return files
    openssl = check_openssl()
    folder.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    argv = [openssl, "req", "-x509", *ec, "-keyout", "ca.key", "-out", files.ca.name]
    argv += ["-days", _DAYS, "-subj", "/CN=msgbus test CA"]
    argv += ["-addext", "basicConstraints=critical,CA:TRUE"]
    argv += ["-addext", "keyUsage=critical,keyCertSign,cRLSign"]
    _run(argv, folder)
    leaves = (
        ("server", "/CN=localhost", "serverAuth", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"),
        ("client", "/CN=msgbus-client", "clientAuth", ""),
    )
    for name, subject, usage, san in leaves:
        argv = [openssl, "req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr"]
        argv += ["-subj", subject]
        _run(argv, folder)
        (folder / f"{name}.ext").write_text(
            f"basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyAgreement\n"
            f"extendedKeyUsage={usage}\n{san}"
        )
        argv = [openssl, "x509", "-req", "-in", f"{name}.csr", "-CA", files.ca.name]
        argv += ["-CAkey", "ca.key", "-CAcreateserial", "-days", _DAYS, "-sha256"]
        argv += ["-extfile", f"{name}.ext", "-out", f"{name}.pem"]
        _run(argv, folder)
    return files


def client_context(files: TlsFiles, *, client_cert: bool = False) -> ssl.SSLContext:
    """An SSL context that trusts only ``files.ca`` and checks the host name (optionally
    presenting the client certificate)."""
    context = ssl.create_default_context(cafile=str(files.ca))
    if client_cert:
        context.load_cert_chain(str(files.client_cert), str(files.client_key))
    return context


def tls_handshake(host: str, port: int, context: ssl.SSLContext, timeout: float = 5.0) -> str:
    """Connect to ``host:port`` and complete a TLS handshake with ``context`` (which checks the
    server certificate and host name); return the negotiated protocol version (e.g.
    ``TLSv1.3``). Raises OSError (``ssl.SSLError`` included) when the handshake fails."""
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=host) as sock,
    ):
        return sock.version() or ""
