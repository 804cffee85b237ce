"""The ``identity`` command: serve, migrate, bootstrap, and client commands (token exchange)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.json_format import MessageToJson
from sqlalchemy.engine import make_url

from identity.app.bootstrap import bootstrap
from identity.config import Settings
from identity.crypto.hashing import SecretHasher
from identity.domain.errors import IdentityError
from identity.store.database import Database
from identity.v1 import token_service_pb2, token_service_pb2_grpc
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


def _token_exchange(settings: Settings, args: argparse.Namespace) -> int:
    # The key comes from the environment, never from argv, where any local user could read it.
    api_key = os.environ.get("IDENTITY_API_KEY", "")
    if not api_key:
        print("identity token exchange: set IDENTITY_API_KEY to the API key to exchange", file=sys.stderr)
        return 2
    lifetime = Duration(seconds=args.lifetime)
    with grpc.insecure_channel(args.server or settings.listen) as channel:
        tokens = token_service_pb2_grpc.TokenServiceStub(channel)
        try:
            if args.key_id:
                reply = tokens.ExchangeApiKeyWithId(
                    token_service_pb2.ExchangeApiKeyWithIdRequest(
                        key_id=args.key_id,
                        api_key=api_key,
                        audience=args.audience,
                        scopes=args.scope,
                        lifetime=lifetime,
                    )
                )
            else:
                reply = tokens.ExchangeApiKey(
                    token_service_pb2.ExchangeApiKeyRequest(
                        api_key=api_key, audience=args.audience, scopes=args.scope, lifetime=lifetime
                    )
                )
        except grpc.RpcError as error:
            print(f"identity token exchange: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    print(MessageToJson(reply, preserving_proto_field_name=True))
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
    commands.add_parser("migrate", help="bring the database schema up to date")
    commands.add_parser("bootstrap", help="create the platform organization and print its key once")
    token = commands.add_parser("token", help="token commands against a running server")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    exchange = token_commands.add_parser(
        "exchange", help="exchange the key in IDENTITY_API_KEY for a JWT (v3 with --key-id, else v2)"
    )
    exchange.add_argument("--server", help="HOST:PORT of the server (default IDENTITY_LISTEN)")
    exchange.add_argument("--key-id", default="", help="the key id, for keys that require it (v3 exchange)")
    exchange.add_argument("--audience", default="", help="the token audience (default: the service's)")
    exchange.add_argument(
        "--scope", action="append", default=[], help="down-scope to this scope (repeatable)"
    )
    exchange.add_argument(
        "--lifetime", type=int, default=0, help="lifetime in seconds (default 900, at most 3600)"
    )
    args = parser.parse_args(argv)
    settings = Settings.from_env().with_overrides(
        listen=getattr(args, "listen", None), workers=getattr(args, "workers", None)
    )
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    handlers = {"serve": _serve, "migrate": _migrate, "bootstrap": _bootstrap, "token": _token_exchange}
    try:
        return handlers[args.command](settings, args)
    except IdentityError as error:
        print(f"identity {args.command}: {error.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
