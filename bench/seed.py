"""Benchmark data: the platform key, tenants and keys through the admin API, bulk keys in the database."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from sqlalchemy import insert

from bench.rpc import PERMISSION, TIMEOUT_SECONDS
from identity.app.bootstrap import bootstrap
from identity.crypto import apikeys
from identity.crypto.hashing import Argon2Profile, SecretHasher
from identity.domain.model import KeyKind
from identity.ids import new_id
from identity.store.database import Database
from identity.store.models import ApiKeyRow
from identity.v1 import (
    key_service_pb2,
    key_service_pb2_grpc,
    organization_service_pb2,
    organization_service_pb2_grpc,
    principal_service_pb2,
    principal_service_pb2_grpc,
)

KEYS_PER_ACCOUNT = 1000  # the largest max_keys_per_service_account a key policy allows
CHEAP_ARGON2 = Argon2Profile(memory_kib=8, time_cost=1, parallelism=1)
BULK_BATCH = 5000
BULK_EXPIRY = timedelta(days=90)


def bootstrap_database(url: str) -> str:
    """Migrate a new database and bootstrap it (production argon2id profile); return the platform key."""
    db = Database(url)
    try:
        db.migrate()
        return bootstrap(db, SecretHasher(Argon2Profile())).api_key
    finally:
        db.dispose()


def wrong_secret(api_key: str) -> str:
    """A well-formed key (valid checksum) with ``api_key``'s lookup handle and another secret."""
    parsed = apikeys.parse(api_key)
    if parsed is None:
        raise ValueError("not a well-formed API key")
    return apikeys.generate(parsed.kind, parsed.environment, lookup=parsed.lookup).plaintext


class Admin:
    """Creates organizations, service accounts and keys through the real admin API, as the platform."""

    def __init__(self, address: str, platform_key: str) -> None:
        """Call the server at ``address`` with ``platform_key``."""
        self._channel = grpc.insecure_channel(address)
        self._metadata = (("authorization", f"Bearer {platform_key}"),)
        self._orgs = organization_service_pb2_grpc.OrganizationServiceStub(self._channel)
        self._principals = principal_service_pb2_grpc.PrincipalServiceStub(self._channel)
        self._keys = key_service_pb2_grpc.KeyServiceStub(self._channel)

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def organization(self, name: str) -> str:
        """A new organization whose service accounts may hold the most keys a policy allows; its id."""
        policy = organization_service_pb2.KeyPolicy(max_keys_per_service_account=KEYS_PER_ACCOUNT)
        request = organization_service_pb2.CreateOrganizationRequest(display_name=name, key_policy=policy)
        reply = self._orgs.CreateOrganization(request, metadata=self._metadata, timeout=TIMEOUT_SECONDS)
        return str(reply.organization.id)

    def accounts(self, org_id: str, count: int) -> list[str]:
        """``count`` new service accounts in ``org_id``; their ids."""
        ids = []
        for number in range(count):
            request = principal_service_pb2.CreatePrincipalRequest(
                org_id=org_id,
                kind=principal_service_pb2.PRINCIPAL_KIND_SERVICE_ACCOUNT,
                display_name=f"bench account {number}",
            )
            reply = self._principals.CreatePrincipal(
                request, metadata=self._metadata, timeout=TIMEOUT_SECONDS
            )
            ids.append(str(reply.principal.id))
        return ids

    def key(self, org_id: str, account_id: str) -> str:
        """A new secret key of ``account_id`` with the benchmark's scope; its plaintext."""
        request = key_service_pb2.CreateKeyRequest(
            org_id=org_id, principal_id=account_id, display_name="bench key", scopes=[PERMISSION]
        )
        reply = self._keys.CreateKey(request, metadata=self._metadata, timeout=TIMEOUT_SECONDS)
        return str(reply.api_key)

    def keys(self, org_id: str, count: int, threads: int = 8) -> list[str]:
        """``count`` new keys in ``org_id``, over as many new service accounts as quotas need.

        Calls run from ``threads`` threads so every server worker hashes; keys go round-robin
        over the accounts so concurrent creates seldom wait on one account's quota lock.
        """
        if count <= 0:
            return []
        accounts = self.accounts(org_id, math.ceil(count / KEYS_PER_ACCOUNT))
        owners = list(itertools.islice(itertools.cycle(accounts), count))
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(lambda owner: self.key(org_id, owner), owners))


def insert_keys(
    url: str,
    org_id: str,
    account_ids: list[str],
    count: int,
    progress: Callable[[int], None] | None = None,
) -> list[str]:
    """Insert ``count`` keys straight into the ``api_keys`` table; return their plaintexts.

    Rows are what CreateKey would write (scope ``inventory:read``, 90-day expiry), spread over
    ``account_ids`` at most :data:`KEYS_PER_ACCOUNT` each, but hashed with a cheap argon2id
    profile: these keys fill the store, and a server verifies each hash with the parameters
    recorded in it. No audit events or key change log rows are written.
    """
    if count > len(account_ids) * KEYS_PER_ACCOUNT:
        raise ValueError(f"{count} keys need {math.ceil(count / KEYS_PER_ACCOUNT)} accounts")
    hasher = SecretHasher(CHEAP_ARGON2)
    now = datetime.now(UTC)
    plaintexts: list[str] = []
    db = Database(url)
    try:
        for start in range(0, count, BULK_BATCH):
            rows: list[dict[str, Any]] = []
            for number in range(start, min(count, start + BULK_BATCH)):
                new = apikeys.generate(KeyKind.SECRET, "live")
                owner = account_ids[number // KEYS_PER_ACCOUNT]
                rows.append(
                    {
                        "id": new_id("key"),
                        "org_id": org_id,
                        "principal_id": owner,
                        "lookup": new.parsed.lookup,
                        "display_name": f"bulk key {number}",
                        "description": "",
                        "kind": KeyKind.SECRET.value,
                        "environment": new.parsed.environment,
                        "last4": new.last4,
                        "scopes": [PERMISSION],
                        "resources": [],
                        "allowed_cidrs": [],
                        "require_key_id": False,
                        "secret_hash": hasher.hash(new.parsed.secret),
                        "secret_version": 1,
                        "previous_secret_hash": None,
                        "previous_secret_expire_time": None,
                        "create_time": now,
                        "update_time": now,
                        "expire_time": now + BULK_EXPIRY,
                        "revoke_time": None,
                        "revoke_reason": "",
                        "last_used_time": None,
                        "created_by": owner,
                    }
                )
                plaintexts.append(new.plaintext)
            with db.write() as session:
                session.execute(insert(ApiKeyRow), rows)
            if progress is not None:
                progress(len(plaintexts))
    finally:
        db.dispose()
    return plaintexts
