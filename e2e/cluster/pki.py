"""The local cluster's certificates, keys and kubeconfigs, made with the openssl command.

One throw-away certificate authority signs everything: the API server's
serving certificate and one client certificate per identity the cluster needs.
Identities follow upstream's conventions, since RBAC's default bindings and
the Node authorizer key on them:

=====================  ==============================  =================
file stem              subject CN                      O (group)
=====================  ==============================  =================
admin                  dra-local-admin                 system:masters
kube-controller-manager system:kube-controller-manager
kube-scheduler         system:kube-scheduler
kubelet                system:node:<node name>         system:nodes
apiserver-kubelet      kube-apiserver-kubelet-client   system:masters
=====================  ==============================  =================

Keys are ECDSA P-256 (fast to make; every component accepts them), including the
service-account token signing key (ES256). Nothing here is meant to outlive the
cluster: certificates are valid for 30 days.
"""

from __future__ import annotations

import base64
import ipaddress
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from e2e.cluster.errors import ClusterError

__all__ = ["ClientIdentity", "Pki", "make_pki", "write_kubeconfig"]

VALID_DAYS = 30


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """A client certificate and its key."""

    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class Pki:
    """Every file the control plane and the node are started with."""

    ca_cert: Path
    ca_key: Path
    apiserver_cert: Path
    apiserver_key: Path
    service_account_key: Path
    service_account_pub: Path
    admin: ClientIdentity
    controller_manager: ClientIdentity
    scheduler: ClientIdentity
    kubelet: ClientIdentity
    apiserver_kubelet_client: ClientIdentity


def _openssl(args: Sequence[str], what: str) -> None:
    result = subprocess.run(
        ["openssl", *args], capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
    )
    if result.returncode != 0:
        raise ClusterError(
            f"pki: openssl could not make {what}: {result.stderr.strip() or result.stdout.strip()}"
        )


def _ec_key(path: Path) -> None:
    _openssl(
        ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path)],
        str(path),
    )
    path.chmod(0o600)


def _config(
    path: Path,
    *,
    common_name: str,
    organization: str = "",
    extensions: Sequence[str],
) -> None:
    # A config of our own, so that the system's openssl.cnf adds no extensions.
    subject = [f"O = {organization}"] if organization else []
    path.write_text(
        "\n".join(
            [
                "[req]",
                "distinguished_name = dn",
                "prompt = no",
                "x509_extensions = ext",
                "[dn]",
                *subject,
                f"CN = {common_name}",
                "[ext]",
                *extensions,
                "",
            ]
        )
    )


def _subject_alt_names(dns_names: Sequence[str], ips: Sequence[str]) -> str:
    entries = [f"DNS:{n}" for n in dns_names] + [f"IP:{ipaddress.ip_address(i)}" for i in ips]
    return "subjectAltName = " + ",".join(entries)


def _certificate(
    directory: Path,
    stem: str,
    ca: tuple[Path, Path],
    *,
    common_name: str,
    organization: str = "",
    server: bool = False,
    dns_names: Sequence[str] = (),
    ips: Sequence[str] = (),
) -> ClientIdentity:
    key, cert, config = (directory / f"{stem}{suffix}" for suffix in (".key", ".crt", ".cnf"))
    _ec_key(key)
    extensions = [
        "basicConstraints = critical,CA:FALSE",
        "keyUsage = critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage = {'serverAuth' if server else 'clientAuth'}",
        "subjectKeyIdentifier = hash",
        "authorityKeyIdentifier = keyid",
    ]
    if dns_names or ips:
        extensions.append(_subject_alt_names(dns_names, ips))
    _config(config, common_name=common_name, organization=organization, extensions=extensions)
    ca_cert, ca_key = ca
    _openssl(
        [
            "req", "-x509", "-new", "-config", str(config), "-key", str(key),
            "-CA", str(ca_cert), "-CAkey", str(ca_key), "-days", str(VALID_DAYS),
            "-out", str(cert),
        ],
        f"the certificate {cert}",
    )  # fmt: skip
    config.unlink()
    return ClientIdentity(cert=cert, key=key)


def make_pki(
    directory: Path,
    *,
    node_name: str,
    service_ip: str,
    hostnames: Sequence[str] = ("localhost",),
) -> Pki:
    """Make the certificate authority, every certificate and the service-account keys.

    ``service_ip`` is the ``kubernetes`` Service's cluster IP (the first of the
    service range), which the serving certificate names along with 127.0.0.1.
    Raises ClusterError when openssl fails.
    """
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    ca_key, ca_cert, ca_config = directory / "ca.key", directory / "ca.crt", directory / "ca.cnf"
    _ec_key(ca_key)
    _config(
        ca_config,
        common_name="dra-local-ca",
        extensions=[
            "basicConstraints = critical,CA:TRUE",
            "keyUsage = critical,keyCertSign,cRLSign,digitalSignature",
            "subjectKeyIdentifier = hash",
        ],
    )
    _openssl(
        ["req", "-x509", "-new", "-config", str(ca_config), "-key", str(ca_key),
         "-days", str(VALID_DAYS), "-out", str(ca_cert)],
        "the certificate authority",
    )  # fmt: skip
    ca_config.unlink()
    ca = (ca_cert, ca_key)

    serving = _certificate(
        directory,
        "apiserver",
        ca,
        common_name="kube-apiserver",
        server=True,
        dns_names=[
            *hostnames,
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ],
        ips=["127.0.0.1", service_ip],
    )
    sa_key, sa_pub = directory / "service-account.key", directory / "service-account.pub"
    _ec_key(sa_key)
    _openssl(["pkey", "-in", str(sa_key), "-pubout", "-out", str(sa_pub)], str(sa_pub))

    def client(stem: str, common_name: str, organization: str = "") -> ClientIdentity:
        return _certificate(directory, stem, ca, common_name=common_name, organization=organization)

    return Pki(
        ca_cert=ca_cert,
        ca_key=ca_key,
        apiserver_cert=serving.cert,
        apiserver_key=serving.key,
        service_account_key=sa_key,
        service_account_pub=sa_pub,
        admin=client("admin", "dra-local-admin", "system:masters"),
        controller_manager=client("kube-controller-manager", "system:kube-controller-manager"),
        scheduler=client("kube-scheduler", "system:kube-scheduler"),
        kubelet=client("kubelet", f"system:node:{node_name}", "system:nodes"),
        apiserver_kubelet_client=client(
            "apiserver-kubelet", "kube-apiserver-kubelet-client", "system:masters"
        ),
    )


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def write_kubeconfig(
    path: Path, *, server: str, ca_cert: Path, identity: ClientIdentity, user: str
) -> Path:
    """Write a kubeconfig with everything embedded (it works when copied elsewhere)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "dra-local",
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(identity.cert),
                    "client-key-data": _b64(identity.key),
                },
            }
        ],
        "contexts": [{"name": "dra-local", "context": {"cluster": "dra-local", "user": user}}],
        "current-context": "dra-local",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path
