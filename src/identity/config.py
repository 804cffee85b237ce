"""Settings from the environment, overridable by command-line flags."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from identity.crypto.hashing import Argon2Profile

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_DATABASE_URL = "sqlite:///identity.db"
# Prometheus' conventional exporter port, on loopback like the gRPC default: set 0.0.0.0:9464 to be scraped.
DEFAULT_METRICS_LISTEN = "127.0.0.1:9464"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("json", "text")
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("", "0", "false", "no", "off")


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment. See the README's configuration table."""

    database_url: str = DEFAULT_DATABASE_URL
    listen: str = DEFAULT_LISTEN
    threads: int = 32
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    pin_workers: bool = False
    shutdown_grace_seconds: float = 10.0
    max_request_bytes: int = 64 * 1024
    log_level: str = "INFO"
    log_format: str = ""  # empty: the command's own (json for serve, text for the others)
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    metrics_listen: str = DEFAULT_METRICS_LISTEN
    argon2: Argon2Profile = field(default_factory=Argon2Profile)
    argon2_threads: int = 0  # 0: the cores each worker process may take, at least one
    argon2_queue: int = 16
    cache_entries: int = 200_000
    # A lookup handle is one key: a person mistyping gets a few tries, a guesser almost none.
    # A peer may front many clients (a gateway), so it gets more room.
    failed_attempts_per_key: int = 10
    failed_attempts_per_peer: int = 300
    kek: str = ""
    kek_file: str = "identity.kek"
    token_issuer: str = "identity"
    token_audiences: tuple[str, ...] = ("identity",)
    signing_algorithm: str = "ES256"
    audit_check_allows: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read ``IDENTITY_*`` variables; unset ones keep their defaults."""
        env = os.environ if env is None else env
        defaults = cls()
        profile = defaults.argon2
        return cls(
            database_url=env.get("IDENTITY_DATABASE_URL", defaults.database_url),
            listen=env.get("IDENTITY_LISTEN", defaults.listen),
            threads=_int(env, "IDENTITY_THREADS", defaults.threads),
            workers=_int(env, "IDENTITY_WORKERS", defaults.workers),
            pin_workers=_flag(env, "IDENTITY_PIN_WORKERS"),
            shutdown_grace_seconds=float(env.get("IDENTITY_SHUTDOWN_GRACE", defaults.shutdown_grace_seconds)),
            max_request_bytes=_int(env, "IDENTITY_MAX_REQUEST_BYTES", defaults.max_request_bytes),
            log_level=_choice(env, "IDENTITY_LOG_LEVEL", LOG_LEVELS, defaults.log_level),
            log_format=_choice(env, "IDENTITY_LOG_FORMAT", LOG_FORMATS, defaults.log_format),
            tls_cert_file=env.get("IDENTITY_TLS_CERT_FILE", defaults.tls_cert_file),
            tls_key_file=env.get("IDENTITY_TLS_KEY_FILE", defaults.tls_key_file),
            tls_client_ca_file=env.get("IDENTITY_TLS_CLIENT_CA_FILE", defaults.tls_client_ca_file),
            metrics_listen=env.get("IDENTITY_METRICS_LISTEN", defaults.metrics_listen),
            argon2=Argon2Profile(
                memory_kib=_int(env, "IDENTITY_ARGON2_MEMORY_KIB", profile.memory_kib),
                time_cost=_int(env, "IDENTITY_ARGON2_TIME_COST", profile.time_cost),
                parallelism=_int(env, "IDENTITY_ARGON2_PARALLELISM", profile.parallelism),
            ),
            argon2_threads=_int(env, "IDENTITY_ARGON2_THREADS", defaults.argon2_threads),
            argon2_queue=_int(env, "IDENTITY_ARGON2_QUEUE", defaults.argon2_queue),
            cache_entries=_int(env, "IDENTITY_CACHE_ENTRIES", defaults.cache_entries),
            failed_attempts_per_key=_int(
                env, "IDENTITY_FAILED_ATTEMPTS_PER_KEY", defaults.failed_attempts_per_key
            ),
            failed_attempts_per_peer=_int(
                env, "IDENTITY_FAILED_ATTEMPTS_PER_PEER", defaults.failed_attempts_per_peer
            ),
            kek=env.get("IDENTITY_KEK", defaults.kek),
            kek_file=env.get("IDENTITY_KEK_FILE", defaults.kek_file),
            token_issuer=env.get("IDENTITY_TOKEN_ISSUER", defaults.token_issuer),
            token_audiences=_list(env, "IDENTITY_TOKEN_AUDIENCES", defaults.token_audiences),
            signing_algorithm=env.get("IDENTITY_SIGNING_ALGORITHM", defaults.signing_algorithm),
            audit_check_allows=_flag(env, "IDENTITY_AUDIT_CHECK_ALLOWS"),
        )

    @property
    def argon2_pool_threads(self) -> int:
        """argon2id hashes one process runs at once: as set, else its share of the cores.

        A pinned worker's share is its one core.
        """
        if self.argon2_threads:
            return self.argon2_threads
        return 1 if self.pin_workers else max(1, (os.cpu_count() or 1) // max(1, self.workers))

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with the given fields changed; None values are ignored (flags not given)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "false")
    if raw.strip().lower() in TRUE_WORDS:
        return True
    if raw.strip().lower() in FALSE_WORDS:
        return False
    raise SystemExit(f"{name} must be true or false, got {raw!r}")


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    raw = env.get(name)
    if raw is None:
        return default
    for choice in choices:
        if raw.strip().lower() == choice.lower():
            return choice
    raise SystemExit(f"{name} must be one of {', '.join(choices)}, got {raw!r}")


def _list(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get(name)
    if raw is None:
        return default
    items = tuple(item.strip() for item in raw.split(",") if item.strip())
    if not items:
        raise SystemExit(f"{name} must list at least one value")
    return items
