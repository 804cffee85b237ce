"""What other services import to call identity-protected services and to protect their own.

Calling: :class:`TokenSource` exchanges an API key for a token and keeps it fresh;
:func:`bearer_channel` (grpcio) and :func:`aio_bearer_channel` (``grpc.aio``) attach it to
every call.

Protecting: :class:`AuthInterceptor` / :class:`AioAuthInterceptor` admit a call only when its
credential grants the permission its method declares, judged offline from the JWK Set
(:class:`OfflineAuthorizer`) or by ``AuthorizationService.Check`` (:class:`CheckAuthorizer`);
handlers read the caller with :func:`current_identity`.
"""

from identity.client.aio_channel import aio_bearer_channel, aio_bearer_interceptors
from identity.client.aio_server_interceptor import AioAuthInterceptor
from identity.client.channel import BearerInterceptor, bearer_channel
from identity.client.checking import AioCheckAuthorizer, CheckAuthorizer
from identity.client.identity import Identity, current_identity, optional_identity
from identity.client.offline import AioOfflineAuthorizer, OfflineAuthorizer
from identity.client.permissions import PUBLIC, AsyncAuthorizer, Authorizer
from identity.client.server_interceptor import AuthInterceptor
from identity.client.token_cache import AsyncTokenSource, TokenSource

__all__ = [
    "PUBLIC",
    "AioAuthInterceptor",
    "AioCheckAuthorizer",
    "AioOfflineAuthorizer",
    "AsyncAuthorizer",
    "AsyncTokenSource",
    "AuthInterceptor",
    "Authorizer",
    "BearerInterceptor",
    "CheckAuthorizer",
    "Identity",
    "OfflineAuthorizer",
    "TokenSource",
    "aio_bearer_channel",
    "aio_bearer_interceptors",
    "bearer_channel",
    "current_identity",
    "optional_identity",
]
