"""Remembered Check answers: the same request bytes, while their allow holds, get the same answer bytes.

A warm Check's judging is a memo lookup; what is left is decoding the request, building and
encoding the response and the layers in between, and in a loaded server that costs three times
the lookup (see bench/RESULTS.md). So the door hands Check's request bytes here first. They are
known by fingerprint (keyed BLAKE2b, as every credential is known in memory, since the bytes
hold one), and the answer last sent for them goes back as it is, as long as the allow it was
built from holds: the same rule, the same bounds (key-state generation, freshness, the
credential's own time) as the decision engine's remembered allows, taken from the engine's
entry. Only allows are kept (a denial is audited each time), and nothing while allows are
audited too (each audit row needs its request's origin).
"""

from __future__ import annotations

import time

from identity.cache.allows import AllowMemo
from identity.checks import DecisionEngine
from identity.services.authorization import check_item, decision_message
from identity.v1 import authorization_service_pb2 as pb

METHOD = "/identity.v1.AuthorizationService/Check"  # the method these answers shortcut


class CheckAnswers:
    """Encoded CheckResponses, with the id of the key they allow, by the CheckRequest bytes they answered."""

    def __init__(self, engine: DecisionEngine, memo: AllowMemo[tuple[bytes, str]]) -> None:
        """Answer for ``engine``'s remembered allows, keeping the answers in ``memo``."""
        self._engine = engine
        self._memo = memo
        self.lookups = memo.lookups  # a hit is a Check answered from memory without being decoded

    def recall(self, request: bytes, *, count_miss: bool = True) -> bytes | None:
        """The answer to send for these request bytes, if one is remembered and its allow still holds.

        Counted as a lookup; a miss not when ``count_miss`` is false (the caller then serves the
        request in full, which looks again and counts that).
        """
        held = self._memo.held(self._memo.key(request), time.time())
        if held is None:
            if count_miss:
                self.lookups.count(False)
            return None
        self.lookups.count(True)
        answer, key_id = held.value
        self._engine.allowed_again(key_id)
        return answer

    def learn(self, request: bytes, decoded: pb.CheckRequest) -> None:
        """After a Check of ``request`` was served in full: keep its answer if the engine keeps its allow.

        The answer is built from the engine's remembered entry, with that entry's bounds, not
        from the response just sent: so it can never outlive, or differ from, an allow the
        engine holds.
        """
        if self._engine.audits_allows:
            return
        item = check_item(list(decoded.permissions), decoded.HasField("resource"), decoded.resource)
        held = self._engine.remembered(self._engine.memo_key(decoded.credential, item, decoded.client_ip))
        if held is None:
            return
        answer = decision_message(held.value).SerializeToString()
        self._memo.put(self._memo.key(request), (answer, held.value.key_id), held.generation, held.until)
