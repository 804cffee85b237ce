"""The saved fuzz corpus, replayed through the fuzz targets' own checks (no fuzzing loop).

Every seed and every input the fuzzers once failed on must keep passing, on SQLite and
PostgreSQL (which refuses text SQLite takes): no exception, no INTERNAL, UNKNOWN or UNAVAILABLE,
no warning, no allow for a credential the harness did not supply.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fuzz.common import World, close_world, corpus_files, method_path, world
from fuzz.credentials import check_credential
from fuzz.rpc import check_rpc, identity_rpcs
from fuzz.seeds import credential_seeds, rpc_seeds
from identity.services.rules import RULES
from tests.conftest import DATABASE_KINDS, fresh_database

RPC_CORPUS = list(corpus_files("rpc"))
CREDENTIAL_CORPUS = list(corpus_files("credentials"))


@pytest.fixture(scope="module", params=DATABASE_KINDS)
def fuzz_world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The fuzz targets' world over a fresh database of each kind, for the whole module."""
    with fresh_database(request.param, tmp_path_factory) as url:
        yield world(url)
        close_world(url)  # before the database goes: its threads would report the loss


@pytest.mark.parametrize("path", RPC_CORPUS, ids=lambda p: p.name)
def test_rpc_corpus(fuzz_world: World, path: Path) -> None:
    check_rpc(path.read_bytes(), fuzz_world)


@pytest.mark.parametrize("path", CREDENTIAL_CORPUS, ids=lambda p: p.name)
def test_credential_corpus(fuzz_world: World, path: Path) -> None:
    check_credential(path.read_bytes(), fuzz_world)


def test_every_rpc_is_a_fuzz_target() -> None:
    # The target enumerates RPCs from the descriptors: each one the rule table knows is reachable.
    assert {method_path(m) for m in identity_rpcs()} == set(RULES)


def test_saved_seeds_are_current() -> None:
    # The seeds in the repository are what fuzz/seeds.py writes (run it after adding an RPC).
    saved = {p.name: p.read_bytes() for p in RPC_CORPUS + CREDENTIAL_CORPUS if p.name.startswith("seed-")}
    assert saved == {**rpc_seeds(), **credential_seeds()}
