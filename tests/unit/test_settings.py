"""Operations settings are checked at start: log level and format, TLS files, the metrics address."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from identity.config import Settings
from identity.metrics.exposition import serve_metrics
from identity.tls import dial, server_credentials
from tests.pki import Authority


def test_log_level_and_format_are_one_of_their_names_in_any_case() -> None:
    settings = Settings.from_env({"IDENTITY_LOG_LEVEL": "warning", "IDENTITY_LOG_FORMAT": "TEXT"})
    assert (settings.log_level, settings.log_format) == ("WARNING", "text")
    assert Settings.from_env({}).log_format == ""  # each command picks its own
    with pytest.raises(SystemExit, match="IDENTITY_LOG_FORMAT must be one of json, text, got 'xml'"):
        Settings.from_env({"IDENTITY_LOG_FORMAT": "xml"})
    with pytest.raises(SystemExit, match="IDENTITY_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR"):
        Settings.from_env({"IDENTITY_LOG_LEVEL": "loud"})


def test_tls_files_must_come_in_pairs_be_readable_and_hold_what_they_should(tmp_path: Path) -> None:
    ca = Authority(tmp_path, "ours")
    server = ca.issue("server", server=True)
    assert server_credentials(Settings()) is None  # nothing configured: plaintext
    assert server_credentials(
        Settings(tls_cert_file=str(server.cert_file), tls_key_file=str(server.key_file))
    )
    secret = tmp_path / "garbage.key"
    secret.write_text("not a key but a secret-looking 0123456789")
    refused = {
        "IDENTITY_TLS_CERT_FILE and IDENTITY_TLS_KEY_FILE must be set together": Settings(
            tls_cert_file=str(server.cert_file)
        ),
        f"IDENTITY_TLS_CERT_FILE: cannot read {tmp_path}/missing.pem: No such file or directory": Settings(
            tls_cert_file=str(tmp_path / "missing.pem"), tls_key_file=str(server.key_file)
        ),
        f"IDENTITY_TLS_KEY_FILE: {secret} holds no unencrypted PEM private key": Settings(
            tls_cert_file=str(server.cert_file), tls_key_file=str(secret)
        ),
        f"IDENTITY_TLS_CLIENT_CA_FILE: {server.key_file} holds no PEM certificate": Settings(
            tls_cert_file=str(server.cert_file),
            tls_key_file=str(server.key_file),
            tls_client_ca_file=str(server.key_file),
        ),
    }
    for message, settings in refused.items():
        with pytest.raises(SystemExit) as stopped:
            server_credentials(settings)
        assert str(stopped.value) == message
    with pytest.raises(SystemExit, match="--cert-file and --key-file must be given together"):
        dial("127.0.0.1:1", str(ca.cert_file), str(server.cert_file))


def test_the_metrics_address_must_be_host_port_and_free() -> None:
    with pytest.raises(SystemExit, match="IDENTITY_METRICS_LISTEN must be HOST:PORT"):
        serve_metrics("9464", list)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(SystemExit, match=f"cannot serve metrics on {address}: Address already in use"):
            serve_metrics(address, list)


def test_on_off_settings_take_true_or_false_words_and_refuse_others() -> None:
    assert Settings.from_env({}).pin_workers is False
    assert Settings.from_env({"IDENTITY_PIN_WORKERS": "True"}).pin_workers is True
    assert Settings.from_env({"IDENTITY_AUDIT_CHECK_ALLOWS": "yes"}).audit_check_allows is True
    assert Settings.from_env({"IDENTITY_AUDIT_CHECK_ALLOWS": "off"}).audit_check_allows is False
    with pytest.raises(SystemExit) as stopped:
        Settings.from_env({"IDENTITY_PIN_WORKERS": "sometimes"})
    assert str(stopped.value) == "IDENTITY_PIN_WORKERS must be true or false, got 'sometimes'"


def test_a_pinned_worker_hashes_on_its_one_core_unless_told_otherwise() -> None:
    assert Settings(workers=1, pin_workers=True).argon2_pool_threads == 1
    assert Settings(workers=1, pin_workers=True, argon2_threads=3).argon2_pool_threads == 3
    assert Settings(workers=1).argon2_pool_threads == max(1, os.cpu_count() or 1)
