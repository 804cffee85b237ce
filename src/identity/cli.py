"""The ``identity`` command: serve, migrate, bootstrap, and client commands (see :mod:`identity.cli_client`)."""

from __future__ import annotations

import argparse
import logging
import sys

import grpc
from sqlalchemy.engine import make_url

from identity.app.bootstrap import bootstrap
from identity.cli_client import (
    CommandError,
    connection_options,
    keys_expiring,
    parse_span,
    report_rpc_error,
    token_exchange,
)
from identity.config import Settings
from identity.crypto.hashing import SecretHasher
from identity.domain.errors import IdentityError
from identity.logs import configure_logging
from identity.store.database import Database
from identity.workers import serve_workers


def _serve(settings: Settings, _args: argparse.Namespace) -> int:
    logging.getLogger("identity").info("database %s, %d worker(s)", _safe_url(settings), settings.workers)
    return serve_workers(settings)


def _safe_url(settings: Settings) -> str:
    return make_url(settings.database_url).render_as_string(hide_password=True)


def _migrate(settings: Settings, _args: argparse.Namespace) -> int:
    Database(settings.database_url).migrate()
    print("database is at the newest schema")
    return 0


def _bootstrap(settings: Settings, _args: argparse.Namespace) -> int:
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
    serve.add_argument(
        "--workers", type=int, help="server processes sharing the port (IDENTITY_WORKERS, default: cores)"
    )
    serve.add_argument(
        "--pin-workers",
        action="store_true",
        default=None,
        help="run worker i on core i only (IDENTITY_PIN_WORKERS, default off)",
    )
    commands.add_parser("migrate", help="bring the database schema up to date")
    commands.add_parser("bootstrap", help="create the platform organization and print its key once")
    client = connection_options()
    token = commands.add_parser("token", help="token commands against a running server")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    exchange = token_commands.add_parser(
        "exchange",
        parents=[client],
        help="exchange the key in IDENTITY_API_KEY for a JWT (v3 with --key-id, else v2)",
    )
    exchange.add_argument("--key-id", default="", help="the key id, for keys that require it (v3 exchange)")
    exchange.add_argument("--audience", default="", help="the token audience (default: the service's)")
    exchange.add_argument(
        "--scope", action="append", default=[], help="down-scope to this scope (repeatable)"
    )
    exchange.add_argument(
        "--lifetime", type=int, default=0, help="lifetime in seconds (default 900, at most 3600)"
    )
    keys = commands.add_parser("keys", help="key commands against a running server")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    expiring = key_commands.add_parser(
        "expiring",
        parents=[client],
        help="list active keys that expire soon, soonest first (caller: IDENTITY_API_KEY)",
    )
    expiring.add_argument(
        "--within", type=parse_span, required=True, help="window from now: 14d, 36h, 90m or 3600s"
    )
    scope = expiring.add_mutually_exclusive_group()
    scope.add_argument("--org", default="", help="the organization (default: the caller's own)")
    scope.add_argument("--all-orgs", action="store_true", help="every organization (a platform key)")
    expiring.add_argument("--json", action="store_true", help="one JSON object per key instead of columns")
    args = parser.parse_args(argv)
    settings = Settings.from_env().with_overrides(
        listen=getattr(args, "listen", None),
        workers=getattr(args, "workers", None),
        pin_workers=getattr(args, "pin_workers", None),
    )
    # serve writes JSON lines for log collectors by default; the other commands talk to a person.
    settings = settings.with_overrides(
        log_format=settings.log_format or ("json" if args.command == "serve" else "text")
    )
    configure_logging(settings.log_level, settings.log_format)
    handlers = {
        "serve": _serve,
        "migrate": _migrate,
        "bootstrap": _bootstrap,
        "token": token_exchange,
        "keys": keys_expiring,
    }
    command = " ".join(
        filter(
            None, [args.command, getattr(args, "token_command", None), getattr(args, "keys_command", None)]
        )
    )
    try:
        return handlers[args.command](settings, args)
    except grpc.RpcError as error:
        return report_rpc_error(command, error)
    except CommandError as error:
        print(f"identity {command}: {error}", file=sys.stderr)
        return 2
    except IdentityError as error:
        print(f"identity {command}: {error.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
