"""Security between ltrr's processes: TLS on gRPC servers and channels, a token on write RPCs.

Off unless configured: a cluster on loopback runs in plaintext without tokens, as before. Each
process gets one SecurityConfig, which the entry points (services/cli_common.py) fill from flags
(--tls-cert, --tls-key, --tls-ca, --tls-client-auth, --tls-server-name, --token-file) and the
environment (LTRR_TOKEN_FILE). The token itself is only ever read from a file, never from a flag,
so it does not show in `ps` or in shell history.

Server side:
- TLS when `cert` and `key` are given; with `client_auth`, every peer must present a certificate
  signed by `ca` (mutual TLS).
- With a token configured, every write RPC (WRITE_METHODS) must carry the metadata
  `authorization: Bearer TOKEN`: none gives UNAUTHENTICATED, another PERMISSION_DENIED. Read RPCs,
  health checks and reflection need none. Tokens are compared in constant time (SHA-256 digests,
  so lengths leak nothing either, then hmac.compare_digest).
Client side (open_channel, open_aio_channel):
- TLS when `ca` is given (the CA that signed the servers' certificates); `cert` and `key`, when
  given, are presented as the client's identity (mutual TLS). `server_name` overrides the name the
  servers' certificates are checked against (default: the target's host name).
- With a token configured, it is sent on the write RPCs only.
One process that is both (the broker serves clients and calls shards) uses one config for both.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
from collections import namedtuple
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from ltrr.v1 import broker_pb2, catalog_pb2, shard_pb2

log = logging.getLogger("ltrr.security")
ENV_TOKEN_FILE = "LTRR_TOKEN_FILE"
TOKEN_METADATA = "authorization"
TOKEN_SCHEME = "Bearer "
ChannelOptions = Sequence[tuple[str, Any]]


def _method(module: Any, service: str, name: str) -> str:
    return f"/{module.DESCRIPTOR.services_by_name[service].full_name}/{name}"


# Every RPC that changes state.
WRITE_METHODS = frozenset({_method(broker_pb2, "Broker", "Feedback"), _method(shard_pb2, "Shard", "Learn"),
                           _method(catalog_pb2, "Catalog", "Write")})


@dataclass(frozen=True, kw_only=True)
class SecurityConfig:
    """Paths of PEM files and of the token file ("" = not configured). cert, key: this process's
    certificate chain and private key (the server's identity, and the client's under mutual TLS);
    ca: the CA certificates that verify peers (servers, and clients under client_auth);
    client_auth: a server requires client certificates signed by `ca`; server_name: the name a
    client checks server certificates against instead of the target's host; token_file: the
    shared token required on (server) and sent with (client) write RPCs."""

    cert: str = ""
    key: str = ""
    ca: str = ""
    client_auth: bool = False
    server_name: str = ""
    token_file: str = ""

    def __post_init__(self) -> None:
        if bool(self.cert) != bool(self.key):
            raise ValueError(f"`cert` and `key` must be given together, but got cert={self.cert!r}, key={self.key!r}")
        if self.client_auth and not (self.ca and self.cert):
            raise ValueError(f"`client_auth` must come with `ca` and `cert`/`key`, but got ca={self.ca!r}, "
                             f"cert={self.cert!r}")
        for name in ("cert", "key", "ca", "token_file"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise ValueError(f"`{name}` must be a readable file, but got {path!r}")

    @property
    def tls_server(self) -> bool:
        return bool(self.cert)

    @property
    def tls_client(self) -> bool:
        return bool(self.ca)

    def token(self) -> bytes:
        """The token file's content without surrounding white space; b"" when none is configured.
        ValueError for an empty file (an empty token would let anyone write)."""
        if not self.token_file:
            return b""
        token = Path(self.token_file).read_bytes().strip()
        if not token:
            raise ValueError(f"`token_file` must hold a token, but {self.token_file!r} is empty")
        return token


NO_SECURITY = SecurityConfig()


def _read(path: str) -> bytes | None:
    return Path(path).read_bytes() if path else None


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# -- server -----------------------------------------------------------------------------------------

def add_port(server: grpc.aio.Server, address: str, config: SecurityConfig) -> int:
    """Bind `address` on `server`, with TLS when the config has a certificate; the bound port."""
    if not config.tls_server:
        host = address.rsplit(":", 1)[0]
        if not is_loopback(host):
            log.warning("serving %s in plaintext: configure --tls-cert/--tls-key (and a token) off loopback",
                        address)
        return server.add_insecure_port(address)
    credentials = grpc.ssl_server_credentials([(Path(config.key).read_bytes(), Path(config.cert).read_bytes())],
                                              root_certificates=_read(config.ca),
                                              require_client_auth=config.client_auth)
    return server.add_secure_port(address, credentials)


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


def check_token(expected: bytes, metadata: Sequence[tuple[str, Any]] | None) -> grpc.StatusCode | None:
    """None when `metadata` carries `authorization: Bearer <expected>`; else the status to answer:
    UNAUTHENTICATED when no token was sent, PERMISSION_DENIED for another token."""
    sent = [v for k, v in (metadata or ()) if k == TOKEN_METADATA]
    if not sent:
        return grpc.StatusCode.UNAUTHENTICATED
    value = sent[0].encode() if isinstance(sent[0], str) else bytes(sent[0])
    given = value[len(TOKEN_SCHEME):] if value.startswith(TOKEN_SCHEME.encode()) else b""
    if not given:
        return grpc.StatusCode.UNAUTHENTICATED
    return None if hmac.compare_digest(_digest(given), _digest(expected)) else grpc.StatusCode.PERMISSION_DENIED


def _refusal(code: grpc.StatusCode, method: str) -> grpc.RpcMethodHandler:
    message = (f"{method} needs a token (metadata `{TOKEN_METADATA}: {TOKEN_SCHEME}TOKEN`)"
               if code == grpc.StatusCode.UNAUTHENTICATED else f"{method}: the token is not valid")

    async def refuse(request: bytes, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    return grpc.unary_unary_rpc_method_handler(refuse)


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Requires the token on the WRITE_METHODS (module docstring); other calls pass untouched."""

    def __init__(self, token: bytes, methods: frozenset[str] = WRITE_METHODS) -> None:
        if not token:
            raise ValueError("`token` must be non-empty, but got an empty token")
        self.token, self.methods = token, methods

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails],
                                                             Awaitable[grpc.RpcMethodHandler]],
                                details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = details.method
        if method in self.methods:
            refused = check_token(self.token, details.invocation_metadata)
            if refused is not None:
                log.warning("%s refused: %s", method, refused.name)
                return _refusal(refused, method)
        return await continuation(details)


def server_interceptors(config: SecurityConfig) -> list[grpc.aio.ServerInterceptor]:
    """The interceptors a server of this config runs (the token check when a token is configured)."""
    token = config.token()
    return [TokenInterceptor(token)] if token else []


# -- client -----------------------------------------------------------------------------------------

def _channel_credentials(config: SecurityConfig) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=_read(config.ca), private_key=_read(config.key),
                                        certificate_chain=_read(config.cert))


def _options(config: SecurityConfig, options: ChannelOptions) -> list[tuple[str, Any]]:
    extra = [("grpc.ssl_target_name_override", config.server_name)] if config.server_name and config.tls_client else []
    return [*options, *extra]


def _with_token(metadata: Any, token: bytes) -> list[tuple[str, str]]:
    return [*(metadata or ()), (TOKEN_METADATA, TOKEN_SCHEME + token.decode())]


_CallDetails = namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready",
                                           "compression"))


class _SyncToken(grpc.UnaryUnaryClientInterceptor):
    """Adds the token to the write RPCs of a blocking channel."""

    def __init__(self, token: bytes) -> None:
        self.token = token

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        if details.method in WRITE_METHODS:
            details = _CallDetails(details.method, details.timeout, _with_token(details.metadata, self.token),
                                   details.credentials, details.wait_for_ready,
                                   getattr(details, "compression", None))
        return continuation(details, request)


class _AioToken(grpc.aio.UnaryUnaryClientInterceptor):
    """Adds the token to the write RPCs of an asyncio channel."""

    def __init__(self, token: bytes) -> None:
        self.token = token

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        if method in WRITE_METHODS:
            details = details._replace(metadata=grpc.aio.Metadata(*_with_token(details.metadata, self.token)))
        return await continuation(details, request)


def open_channel(target: str, config: SecurityConfig = NO_SECURITY, options: ChannelOptions = ()) -> grpc.Channel:
    """A blocking channel to `target`: TLS when the config has a CA, the token on write RPCs."""
    opts = _options(config, options)
    plain = (grpc.secure_channel(target, _channel_credentials(config), options=opts) if config.tls_client
             else grpc.insecure_channel(target, options=opts))
    token = config.token()
    return grpc.intercept_channel(plain, _SyncToken(token)) if token else plain


def open_aio_channel(target: str, config: SecurityConfig = NO_SECURITY, options: ChannelOptions = ()
                     ) -> grpc.aio.Channel:
    """An asyncio channel to `target`: TLS when the config has a CA, the token on write RPCs."""
    opts = _options(config, options)
    token = config.token()
    interceptors: Any = [_AioToken(token)] if token else None  # grpc-stubs type interceptors as a placeholder
    if config.tls_client:
        return grpc.aio.secure_channel(target, _channel_credentials(config), options=opts, interceptors=interceptors)
    return grpc.aio.insecure_channel(target, options=opts, interceptors=interceptors)
