"""Certificates for the tests' TLS servers, made by the ``openssl`` command line.

:func:`make_serving_certificate` writes a CA and a serving certificate signed by it, as
the chart (or cert-manager) makes them for the controller's admission webhook: ``ca.crt``,
``tls.crt``, ``tls.key`` in one directory.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["make_serving_certificate"]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_serving_certificate(
    directory: Path,
    *,
    names: tuple[str, ...] = ("localhost",),
    ips: tuple[str, ...] = ("127.0.0.1",),
) -> Path:
    """CA and serving certificate (for ``names`` and ``ips``) in ``directory``; returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=dra-driver-test-ca", "-keyout", "ca.key", "-out", "ca.crt",
        cwd=directory,
    )  # fmt: skip
    alt = ",".join([f"DNS:{n}" for n in names] + [f"IP:{i}" for i in ips])
    (directory / "ext.cnf").write_text(f"subjectAltName={alt}\n")
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={names[0]}",
        "-keyout", "tls.key", "-out", "tls.csr",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "tls.crt",
        cwd=directory,
    )  # fmt: skip
    return directory
