"""TokenService."""

from __future__ import annotations

from typing import TypeAlias, TypeVar

import grpc

from identity.app.tokens import IssuedToken, TokenExchange, TokenOptions
from identity.metadata import metadata_value
from identity.services.convert import to_timedelta, to_timestamp
from identity.services.interceptor import current_request, origin_of
from identity.v1 import token_service_pb2 as pb
from identity.v1 import token_service_pb2_grpc as pb_grpc

ExchangeResponse: TypeAlias = (
    pb.ExchangeApiKeyResponse
    | pb.ExchangeApiKeyWithIdResponse
    | pb.ExchangeClientCredentialsResponse
    | pb.ExchangePasswordResponse
)


R = TypeVar("R", bound=ExchangeResponse)


def _fill(response: R, issued: IssuedToken) -> R:
    claims = issued.claims
    response.access_token = issued.token
    response.token_type = "Bearer"
    response.expires_in = max(0, int((claims.expire_time - claims.issue_time).total_seconds()))
    response.expire_time.CopyFrom(to_timestamp(claims.expire_time))
    response.key_id = claims.key_id
    response.org_id = claims.org_id
    response.scopes.extend(claims.scopes)
    return response


class TokenServicer(pb_grpc.TokenServiceServicer):
    """Serves TokenService over the TokenExchange use cases."""

    def __init__(self, exchange: TokenExchange) -> None:
        """Serve ``exchange``."""
        self._exchange = exchange

    def ExchangeApiKey(
        self, request: pb.ExchangeApiKeyRequest, context: grpc.ServicerContext
    ) -> pb.ExchangeApiKeyResponse:
        """v2: the API key alone, from the request or ``x-api-key`` metadata."""
        api_key = request.api_key or metadata_value(context.invocation_metadata(), "x-api-key") or ""
        options = TokenOptions(
            request.audience, tuple(request.scopes), to_timedelta(request.lifetime, "lifetime")
        )
        issued = self._exchange.exchange_api_key(origin_of(context), api_key, options)
        return _fill(pb.ExchangeApiKeyResponse(), issued)

    def ExchangeApiKeyWithId(
        self, request: pb.ExchangeApiKeyWithIdRequest, context: grpc.ServicerContext
    ) -> pb.ExchangeApiKeyWithIdResponse:
        """v3: key id and API key, from the request or ``x-api-key-id`` and ``x-api-key`` metadata."""
        metadata = context.invocation_metadata()
        key_id = request.key_id or metadata_value(metadata, "x-api-key-id") or ""
        api_key = request.api_key or metadata_value(metadata, "x-api-key") or ""
        options = TokenOptions(
            request.audience, tuple(request.scopes), to_timedelta(request.lifetime, "lifetime")
        )
        issued = self._exchange.exchange_api_key_with_id(origin_of(context), key_id, api_key, options)
        return _fill(pb.ExchangeApiKeyWithIdResponse(), issued)

    def ExchangeClientCredentials(
        self, request: pb.ExchangeClientCredentialsRequest, context: grpc.ServicerContext
    ) -> pb.ExchangeClientCredentialsResponse:
        """OAuth 2.0 client credentials grant."""
        options = TokenOptions(request.audience, tuple(request.scope.split()), scope_string=True)
        issued = self._exchange.exchange_client_credentials(
            origin_of(context),
            request.grant_type,
            request.client_id,
            request.client_secret,
            request.org_id,
            options,
        )
        return _fill(pb.ExchangeClientCredentialsResponse(), issued)

    def ExchangePassword(
        self, request: pb.ExchangePasswordRequest, context: grpc.ServicerContext
    ) -> pb.ExchangePasswordResponse:
        """Legacy v1 password flow (deprecated)."""
        issued = self._exchange.exchange_password(
            origin_of(context), request.username, request.password, request.client_id, request.client_secret
        )
        return _fill(pb.ExchangePasswordResponse(), issued)

    def GetJwks(self, request: pb.GetJwksRequest, context: grpc.ServicerContext) -> pb.GetJwksResponse:
        """The public signing keys as a JWK Set."""
        return pb.GetJwksResponse(jwks_json=self._exchange.jwks_json())

    def IntrospectToken(
        self, request: pb.IntrospectTokenRequest, context: grpc.ServicerContext
    ) -> pb.IntrospectTokenResponse:
        """RFC 7662-style introspection."""
        claims = self._exchange.introspect(request.token)
        if claims is None:
            return pb.IntrospectTokenResponse(active=False)
        return pb.IntrospectTokenResponse(
            active=True,
            sub=claims.subject,
            org_id=claims.org_id,
            key_id=claims.key_id,
            scopes=claims.scopes,
            exp=int(claims.expire_time.timestamp()),
            iat=int(claims.issue_time.timestamp()),
            jti=claims.jti,
        )

    def RevokeToken(
        self, request: pb.RevokeTokenRequest, context: grpc.ServicerContext
    ) -> pb.RevokeTokenResponse:
        """Revoke one token."""
        self._exchange.revoke(request.token)
        return pb.RevokeTokenResponse()

    def RotateSigningKey(
        self, request: pb.RotateSigningKeyRequest, context: grpc.ServicerContext
    ) -> pb.RotateSigningKeyResponse:
        """Make a new signing key current (platform credential)."""
        kid, algorithm = self._exchange.rotate_signing_key(current_request(), request.algorithm)
        return pb.RotateSigningKeyResponse(kid=kid, algorithm=algorithm)
