"""
TLS for asynqueue.wire: the server's certificate (given, or a self-signed
one made at start), and the worker's side, which trusts no certificate
authority: the worker and server prove the shared secret over the SHA-256
of the certificate each of them sees (see L{asynqueue.wire._protocol}), so
a certificate nobody signed still can't be replaced unnoticed.

Needs pyOpenSSL (C{pip install twisted[tls]}).
"""

from __future__ import annotations

import datetime
import hashlib
from typing import Any

from zope.interface import implementer


def _openssl() -> Any:
    try:
        from OpenSSL import SSL
    except ImportError as e:
        raise RuntimeError(
            "asynqueue.wire needs pyOpenSSL for TLS: pip install 'twisted[tls]'"
            " (or, for tests on loopback only, turn TLS off on both sides)"
        ) from e
    return SSL


def selfSignedPEM(commonName: str = "asynqueue-wire") -> tuple[bytes, bytes]:
    """
    A new private key and a self-signed certificate for it, valid for ten
    years, both PEM-encoded.

    @return: C{(certificate, key)}
    """
    _openssl()
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, commonName)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return (
        certificate.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def fingerprint(certificate: Any) -> bytes:
    """
    The SHA-256 of a certificate's DER encoding: the channel binding.

    @param certificate: A pyOpenSSL C{X509} (as a TLS transport's
        C{getPeerCertificate()} gives), or PEM bytes.
    """
    _openssl()
    from OpenSSL import crypto

    if isinstance(certificate, bytes):
        certificate = crypto.load_certificate(crypto.FILETYPE_PEM, certificate)
    der = crypto.dump_certificate(crypto.FILETYPE_ASN1, certificate)
    return hashlib.sha256(der).digest()


def serverOptions(certificatePEM: bytes, keyPEM: bytes) -> Any:
    """
    The server's TLS options (TLS 1.2 or later).

    @raise ValueError: the certificate or key can't be read, or don't match.
    """
    _openssl()
    from OpenSSL import crypto
    from twisted.internet import ssl

    try:
        certificate = crypto.load_certificate(crypto.FILETYPE_PEM, certificatePEM)
        key = crypto.load_privatekey(crypto.FILETYPE_PEM, keyPEM)
    except crypto.Error as e:
        raise ValueError(f"the TLS certificate or key can't be read: {e}") from e
    try:
        return ssl.CertificateOptions(
            privateKey=key,
            certificate=certificate,
            raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
        )
    except Exception as e:
        raise ValueError(f"the TLS certificate and key don't match: {e}") from e


def clientCreator() -> Any:
    """
    The worker's TLS connection creator: encryption without certificate
    authorities (the shared secret, bound to the certificate seen,
    authenticates the server instead).
    """
    SSL = _openssl()
    from twisted.internet import ssl
    from twisted.internet.interfaces import IOpenSSLClientConnectionCreator

    context = ssl.CertificateOptions(raiseMinimumTo=ssl.TLSVersion.TLSv1_2).getContext()

    @implementer(IOpenSSLClientConnectionCreator)
    class Creator:
        def clientConnectionForTLS(self, tlsProtocol: object) -> Any:
            connection = SSL.Connection(context, None)
            connection.set_app_data(tlsProtocol)
            return connection

    return Creator()
