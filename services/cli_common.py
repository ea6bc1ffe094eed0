"""Helpers shared by the `ltrr` command modules."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

from services.security import ENV_TOKEN_FILE, SecurityConfig

# Default ports on one machine: below Linux's ephemeral range (32768-60999 by default), where any
# outgoing connection or free-port bind can hold a port for a moment. At 50050 a fresh clone's
# `make demo` once failed to bind right after the test suite (NOTES.md, session 13). The k8s
# manifests keep 50050/50051: a pod binds before it connects anywhere.
DEFAULT_BROKER_PORT = 7050
DEFAULT_SHARD_PORT = 7051
DEMO_QUERIES = ("bohemian rhapsody", "taylor swift love", "dance monkey", "beyonce", "summer hits 2019")


def parse_options(pairs: Sequence[str], *, scoped: bool) -> dict[str, Any]:
    """["k1=1.2"] -> {"k1": "1.2"}; scoped: ["lexical.k1=1.2"] -> {"lexical": {"k1": "1.2"}}."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: --option expects {'STRATEGY.' if scoped else ''}KEY=VALUE, got {pair!r}")
        if scoped:
            scope, dot, name = key.partition(".")
            if not dot:
                raise SystemExit(f"error: --option expects STRATEGY.KEY=VALUE, got {pair!r}")
            out.setdefault(scope, {})[name] = value
        else:
            out[key] = value
    return out


def add_security_flags(parser: argparse.ArgumentParser, *, server: bool) -> None:
    """The TLS and token flags (services.security) of a command that serves (`server`) or only calls."""
    who = "this server's" if server else "the client's (mutual TLS)"
    parser.add_argument("--tls-cert", default="", metavar="PEM", help=f"{who} certificate chain; with "
                        "--tls-key" + (" turns TLS on" if server else ""))
    parser.add_argument("--tls-key", default="", metavar="PEM", help=f"{who} private key")
    parser.add_argument("--tls-ca", default="", metavar="PEM",
                        help="CA certificates that verify the servers called (turns TLS on for calls)"
                             + ("; with --tls-client-auth, also the clients" if server else ""))
    if server:
        parser.add_argument("--tls-client-auth", action="store_true",
                            help="require client certificates signed by --tls-ca (mutual TLS)")
        parser.add_argument("--health-port", type=int, default=0, metavar="PORT",
                            help="also answer gRPC health checks in plaintext on this port, for probes that "
                                 "cannot speak TLS (Kubernetes') (default: off)")
    parser.add_argument("--tls-server-name", default="", metavar="NAME",
                        help="check server certificates against NAME instead of the target's host name")
    parser.add_argument("--token-file", default=None, metavar="PATH",
                        help=f"file holding the token {'required on' if server else 'sent with'} write RPCs "
                             f"(Feedback, Learn) (default: ${ENV_TOKEN_FILE}; none: no token)")


def security_from_args(args: argparse.Namespace) -> SecurityConfig:
    """The services.security.SecurityConfig of the flags add_security_flags added; the token file
    defaults to the environment's LTRR_TOKEN_FILE. Namespaces built without those flags get none."""
    token_file = getattr(args, "token_file", None)
    if token_file is None:
        token_file = os.environ.get(ENV_TOKEN_FILE, "")
    return SecurityConfig(cert=getattr(args, "tls_cert", ""), key=getattr(args, "tls_key", ""),
                          ca=getattr(args, "tls_ca", ""), client_auth=getattr(args, "tls_client_auth", False),
                          server_name=getattr(args, "tls_server_name", ""), token_file=token_file)
