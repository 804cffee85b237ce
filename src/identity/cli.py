"""The ``identity`` command: serve, migrate, bootstrap."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

from sqlalchemy.engine import make_url

from identity.app.bootstrap import bootstrap
from identity.config import Settings
from identity.crypto.hashing import SecretHasher
from identity.domain.errors import IdentityError
from identity.server import build_server
from identity.store.database import Database


def _serve(settings: Settings) -> int:
    server, port = build_server(settings)
    server.start()
    host = settings.listen.rpartition(":")[0]
    logging.getLogger("identity").info("serving on %s:%d (database %s)", host, port, _safe_url(settings))

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger("identity").info(
            "signal %d: draining for up to %.0f s", signum, settings.shutdown_grace_seconds
        )
        server.stop(settings.shutdown_grace_seconds)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.wait()
    return 0


def _safe_url(settings: Settings) -> str:
    return make_url(settings.database_url).render_as_string(hide_password=True)


def _migrate(settings: Settings) -> int:
    Database(settings.database_url).migrate()
    print("database is at the newest schema")
    return 0


def _bootstrap(settings: Settings) -> int:
    db = Database(settings.database_url)
    db.migrate()
    issued = bootstrap(db, SecretHasher(settings.argon2))
    print(
        f"platform organization {issued.key.org_id}, key {issued.key.id}; the key is shown once:",
        file=sys.stderr,
    )
    print(issued.api_key)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the ``identity`` command line."""
    parser = argparse.ArgumentParser(
        prog="identity", description="Identity service: API keys, tokens, checks."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gRPC server")
    serve.add_argument("--listen", help="HOST:PORT to listen on (IDENTITY_LISTEN, default 127.0.0.1:50051)")
    commands.add_parser("migrate", help="bring the database schema up to date")
    commands.add_parser("bootstrap", help="create the platform organization and print its key once")
    args = parser.parse_args(argv)
    settings = Settings.from_env().with_overrides(listen=getattr(args, "listen", None))
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        return {"serve": _serve, "migrate": _migrate, "bootstrap": _bootstrap}[args.command](settings)
    except IdentityError as error:
        print(f"identity {args.command}: {error.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
