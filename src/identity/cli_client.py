"""``identity`` commands that talk to a running server with the same RPCs as any client.

The caller's API key comes from ``IDENTITY_API_KEY``, never from the command line, where any
local user could read it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Iterator
from datetime import timedelta

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.json_format import MessageToDict, MessageToJson

from identity.config import Settings
from identity.domain.validation import escape_controls
from identity.tls import dial
from identity.v1 import (
    authorization_service_pb2,
    authorization_service_pb2_grpc,
    key_service_pb2,
    key_service_pb2_grpc,
    organization_service_pb2,
    organization_service_pb2_grpc,
    token_service_pb2,
    token_service_pb2_grpc,
)

API_KEY_VARIABLE = "IDENTITY_API_KEY"
_SPAN = re.compile(r"(\d+)\s*([smhd]?)")
_UNITS = {"": "seconds", "s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class CommandError(Exception):
    """A client command could not do its job; the message says why (never a secret)."""


def parse_span(text: str) -> timedelta:
    """``14d``, ``36h``, ``90m``, ``3600s`` or ``3600`` (seconds) as a timedelta."""
    match = _SPAN.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a span such as 14d, 36h, 90m or 3600s")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def api_key() -> str:
    """The caller's API key, from the environment."""
    key = os.environ.get(API_KEY_VARIABLE, "")
    if not key:
        raise CommandError(f"set {API_KEY_VARIABLE} to the API key to call with")
    return key


def connection_options() -> argparse.ArgumentParser:
    """The options of every command that dials a server (a parent parser): where, and how to speak TLS."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--server", help="HOST:PORT of the server (default IDENTITY_LISTEN)")
    options.add_argument(
        "--ca-file", default="", help="TLS: the CA certificate(s) that signed the server's certificate (PEM)"
    )
    options.add_argument(
        "--cert-file", default="", help="mutual TLS: this client's certificate (PEM), with --key-file"
    )
    options.add_argument("--key-file", default="", help="mutual TLS: this client's private key (PEM)")
    return options


def connect(args: argparse.Namespace, default_server: str) -> grpc.Channel:
    """A channel as :func:`connection_options` asked: to ``--server`` (else ``default_server``)."""
    return dial(args.server or default_server, args.ca_file, args.cert_file, args.key_file)


def token_exchange(settings: Settings, args: argparse.Namespace) -> int:
    """Exchange the key in ``IDENTITY_API_KEY`` for a JWT (v3 with ``--key-id``) and print the reply."""
    key = api_key()
    lifetime = Duration(seconds=args.lifetime)
    with connect(args, settings.listen) as channel:
        tokens = token_service_pb2_grpc.TokenServiceStub(channel)
        if args.key_id:
            reply: token_service_pb2.ExchangeApiKeyResponse | token_service_pb2.ExchangeApiKeyWithIdResponse
            reply = tokens.ExchangeApiKeyWithId(
                token_service_pb2.ExchangeApiKeyWithIdRequest(
                    key_id=args.key_id,
                    api_key=key,
                    audience=args.audience,
                    scopes=args.scope,
                    lifetime=lifetime,
                )
            )
        else:
            reply = tokens.ExchangeApiKey(
                token_service_pb2.ExchangeApiKeyRequest(
                    api_key=key, audience=args.audience, scopes=args.scope, lifetime=lifetime
                )
            )
    print(MessageToJson(reply, preserving_proto_field_name=True))
    return 0


def keys_expiring(settings: Settings, args: argparse.Namespace) -> int:
    """Print the active keys that expire within ``--within``: soonest first, one per line.

    The organization is ``--org``, else the caller's own; ``--all-orgs`` (a platform key) walks
    every organization. ``--json`` prints one JSON object per key, for scripts and notifiers.
    """
    metadata = (("authorization", f"Bearer {api_key()}"),)
    with connect(args, settings.listen) as channel:
        for org_id in _organizations(channel, metadata, args):
            for key in _expiring(channel, metadata, org_id, args.within):
                print(_key_line(key, as_json=args.json))
    return 0


def _organizations(
    channel: grpc.Channel, metadata: tuple[tuple[str, str], ...], args: argparse.Namespace
) -> Iterator[str]:
    if args.org:
        yield args.org
        return
    if not args.all_orgs:
        me = authorization_service_pb2_grpc.AuthorizationServiceStub(channel).WhoAmI(
            authorization_service_pb2.WhoAmIRequest(), metadata=metadata
        )
        yield me.org_id
        return
    orgs = organization_service_pb2_grpc.OrganizationServiceStub(channel)
    token = ""
    while True:
        page = orgs.ListOrganizations(
            organization_service_pb2.ListOrganizationsRequest(page_size=1000, page_token=token),
            metadata=metadata,
        )
        yield from (org.id for org in page.organizations)
        token = page.next_page_token
        if not token:
            return


def _expiring(
    channel: grpc.Channel, metadata: tuple[tuple[str, str], ...], org_id: str, within: timedelta
) -> Iterator[key_service_pb2.Key]:
    keys = key_service_pb2_grpc.KeyServiceStub(channel)
    span = Duration()
    span.FromTimedelta(within)
    token = ""
    while True:
        page = keys.ListExpiringKeys(
            key_service_pb2.ListExpiringKeysRequest(
                org_id=org_id, within=span, page_size=1000, page_token=token
            ),
            metadata=metadata,
        )
        yield from page.keys
        token = page.next_page_token
        if not token:
            return


def _key_line(key: key_service_pb2.Key, *, as_json: bool) -> str:
    if as_json:
        return json.dumps(MessageToDict(key, preserving_proto_field_name=True), sort_keys=True)
    expires = key.expire_time.ToDatetime().strftime("%Y-%m-%dT%H:%M:%SZ")
    # A name may hold tabs and line breaks: escaped, it cannot shift a column or forge a line.
    name = escape_controls(key.display_name)
    return "\t".join([expires, key.id, key.org_id, key.principal_id, key.prefix, name])


def report_rpc_error(command: str, error: grpc.RpcError) -> int:
    """Say what the server answered, on stderr; the exit status of a refused command."""
    print(f"identity {command}: {error.code().name}: {error.details()}", file=sys.stderr)
    return 1
