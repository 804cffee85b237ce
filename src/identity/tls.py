"""TLS for the gRPC port, and for clients that dial it: credentials from PEM files.

A file that cannot be read, or does not hold what it should, stops the program with a message
naming the setting, never with the file's contents (the key is a secret).
"""

from __future__ import annotations

from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from identity.config import Settings


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials for the server, or None to serve plaintext (nothing configured).

    With a client CA, clients must present a certificate it signed (mutual TLS).
    """
    if not (settings.tls_cert_file or settings.tls_key_file or settings.tls_client_ca_file):
        return None
    if not (settings.tls_cert_file and settings.tls_key_file):
        raise SystemExit("IDENTITY_TLS_CERT_FILE and IDENTITY_TLS_KEY_FILE must be set together")
    client_ca = (
        _certificates(settings.tls_client_ca_file, "IDENTITY_TLS_CLIENT_CA_FILE")
        if settings.tls_client_ca_file
        else None
    )
    return grpc.ssl_server_credentials(
        [
            (
                _private_key(settings.tls_key_file, "IDENTITY_TLS_KEY_FILE"),
                _certificates(settings.tls_cert_file, "IDENTITY_TLS_CERT_FILE"),
            )
        ],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def dial(target: str, ca_file: str = "", cert_file: str = "", key_file: str = "") -> grpc.Channel:
    """A channel to ``target``: TLS when any file is given, else plaintext.

    ``ca_file`` holds the roots that signed the server's certificate (else the system's);
    ``cert_file`` and ``key_file``, together, the client's own certificate for mutual TLS.
    """
    if not (ca_file or cert_file or key_file):
        return grpc.insecure_channel(target)
    if bool(cert_file) != bool(key_file):
        raise SystemExit("--cert-file and --key-file must be given together")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_certificates(ca_file, "--ca-file") if ca_file else None,
        private_key=_private_key(key_file, "--key-file") if key_file else None,
        certificate_chain=_certificates(cert_file, "--cert-file") if cert_file else None,
    )
    return grpc.secure_channel(target, credentials)


def _certificates(path: str, setting: str) -> bytes:
    """The PEM certificates in ``path``; stop the program if there are none."""
    pem = _read(path, setting)
    try:
        x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise SystemExit(f"{setting}: {path} holds no PEM certificate") from None
    return pem


def _private_key(path: str, setting: str) -> bytes:
    """The unencrypted PEM private key in ``path``; stop the program if it holds none."""
    pem = _read(path, setting)
    try:
        serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise SystemExit(f"{setting}: {path} holds no unencrypted PEM private key") from None
    return pem


def _read(path: str, setting: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise SystemExit(f"{setting}: cannot read {path}: {error.strerror}") from None
