"""Certificates and keys for a local control plane: one CA, serving and client certificates, and the
service-account signing key. Written once into a directory and reused while they are valid.

Everything is on 127.0.0.1: the API server's and the node agents' serving certificates name
127.0.0.1 and localhost; client identities follow Kubernetes' conventions (the CN is the user, each
O is a group), e.g. ``CN=kubernetes-admin, O=system:masters`` for the cluster admin.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=365)

# client identities: file stem -> (user, groups)
CLIENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "admin": ("kubernetes-admin", ("system:masters",)),
    "controller-manager": ("system:kube-controller-manager", ()),
    "scheduler": ("system:kube-scheduler", ()),
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", ("system:masters",)),
    "etcd-client": ("kube-apiserver-etcd-client", ()),
    # the node agents stand in for every kubelet; they act with the admin's rights
    "node-agent": ("jhub-ext-node-agent", ("system:masters",)),
}
SERVING = ("apiserver", "etcd", "kubelet")


@dataclass(frozen=True)
class Pki:
    """Paths of the files :func:`ensure_pki` wrote."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        """The cluster CA's certificate, which every component trusts."""
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        """The cluster CA's private key (the controller manager signs certificates with it)."""
        return self.directory / "ca.key"

    @property
    def sa_key(self) -> Path:
        """The private key that signs service-account tokens."""
        return self.directory / "sa.key"

    @property
    def sa_pub(self) -> Path:
        """The public key that verifies service-account tokens."""
        return self.directory / "sa.pub"

    def cert(self, stem: str) -> Path:
        """The certificate of the component or client ``stem`` (``apiserver``, ``admin``, ...)."""
        return self.directory / f"{stem}.crt"

    def key(self, stem: str) -> Path:
        """The private key of the component or client ``stem``."""
        return self.directory / f"{stem}.key"


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


def _still_valid(path: Path) -> bool:
    if not path.exists():
        return False
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > datetime.timedelta(days=7)


def ensure_pki(directory: Path) -> Pki:
    """Create the CA and every certificate under ``directory`` unless valid ones are there."""
    pki = Pki(directory)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    if _still_valid(pki.ca_cert) and all(_still_valid(pki.cert(s)) for s in (*SERVING, *CLIENTS)):
        return pki

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("jhub-ext-local-ca")
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(pki.ca_key, ca_key)
    pki.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    def issue(stem: str, subject: x509.Name, usages: list[x509.ObjectIdentifier], serving: bool) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            _builder(subject, ca_name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        if serving:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.DNSName("kubernetes"),
                        x509.DNSName("kubernetes.default.svc"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.IPAddress(ipaddress.ip_address("10.96.0.1")),
                    ]
                ),
                critical=False,
            )
        _write_key(pki.key(stem), key)
        pki.cert(stem).write_bytes(
            builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
        )

    both = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    for stem in SERVING:
        issue(stem, _name(f"jhub-ext-{stem}"), both, serving=True)
    for stem, (user, groups) in CLIENTS.items():
        issue(stem, _name(user, groups), [ExtendedKeyUsageOID.CLIENT_AUTH], serving=False)

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(pki.sa_key, sa_key)
    pki.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki
