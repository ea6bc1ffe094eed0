"""TLS between ltrr's processes and the token on write RPCs (services/security.py), against real
shard and broker processes, with a throwaway CA made in the test (the `cryptography` package)."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from core.catalog import Entity
from core.types import EventType, FeedbackEvent
from services.cli import build_parser
from services.cli_common import security_from_args
from services.client import BrokerClient, ShardClient
from services.cluster import broker_args
from services.process import ServerProcess, shard_args, spawn, wait_serving
from services.security import TOKEN_METADATA, SecurityConfig, check_token
from tests.services.conftest import config

TOKEN = "s3cret-token-for-tests"


# -- a throwaway PKI --------------------------------------------------------------------------------

def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> str:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return str(path)


def _write_cert(cert: x509.Certificate, path: Path) -> str:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


def _builder(subject: str, issuer: str, public: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
            .public_key(public).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1)))


@dataclass(frozen=True)
class Authority:
    """A CA (its certificate file `ca`) and one leaf certificate it signed (`cert`, `key`), good for
    localhost and 127.0.0.1, as a server and as a client."""

    ca: str
    cert: str
    key: str


def make_authority(folder: Path, name: str) -> Authority:
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (_builder(f"{name} CA", f"{name} CA", ca_key.public_key())
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (_builder(f"{name} ltrr", f"{name} CA", key.public_key())
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return Authority(_write_cert(ca, folder / "ca.pem"), _write_cert(leaf, folder / "cert.pem"),
                     _write_key(key, folder / "key.pem"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Authority | str]:
    root = tmp_path_factory.mktemp("pki")
    (root / "token").write_text(TOKEN + "\n")
    (root / "wrong-token").write_text("not-the-token\n")
    return {"ours": make_authority(root / "ours", "ours"), "rogue": make_authority(root / "rogue", "rogue"),
            "token": str(root / "token"), "wrong": str(root / "wrong-token")}


def _ours(pki: dict[str, Authority | str]) -> Authority:
    ours = pki["ours"]
    assert isinstance(ours, Authority)
    return ours


def server_flags(a: Authority, token_file: str, *, client_auth: bool = False) -> list[str]:
    return ["--tls-cert", a.cert, "--tls-key", a.key, "--tls-ca", a.ca, "--token-file", token_file,
            *(["--tls-client-auth"] if client_auth else [])]


def _event(i: int, entity_id: str) -> FeedbackEvent:
    return FeedbackEvent(event_id=f"sec-{i}", query_text="love night", entity_id=entity_id, type=EventType.CLICK,
                         value=0.0, timestamp=time.time(), context={})


# -- the token check, as a table --------------------------------------------------------------------

@pytest.mark.parametrize(("metadata", "expected"), [
    (None, grpc.StatusCode.UNAUTHENTICATED),
    ((("other", "x"),), grpc.StatusCode.UNAUTHENTICATED),
    (((TOKEN_METADATA, TOKEN),), grpc.StatusCode.UNAUTHENTICATED),  # no "Bearer " scheme
    (((TOKEN_METADATA, "Bearer "),), grpc.StatusCode.UNAUTHENTICATED),
    (((TOKEN_METADATA, "Bearer wrong"),), grpc.StatusCode.PERMISSION_DENIED),
    (((TOKEN_METADATA, f"Bearer {TOKEN}x"),), grpc.StatusCode.PERMISSION_DENIED),
    (((TOKEN_METADATA, f"Bearer {TOKEN}"),), None),
])
def test_check_token(metadata: tuple[tuple[str, str], ...] | None, expected: grpc.StatusCode | None) -> None:
    assert check_token(TOKEN.encode(), metadata) == expected


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"cert": "x.pem"}, "`cert` and `key` must be given together"),
    ({"client_auth": True}, "`client_auth` must come with `ca`"),
    ({"ca": "/nonexistent/ca.pem"}, "`ca` must be a readable file"),
    ({"token_file": "/nonexistent/token"}, "`token_file` must be a readable file"),
])
def test_invalid_security_config(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SecurityConfig(**kwargs)  # type: ignore[arg-type]


def test_an_empty_token_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("\n")
    with pytest.raises(ValueError, match="`token_file` must hold a token"):
        SecurityConfig(token_file=str(tmp_path / "token")).token()


def test_the_flags_and_the_environment_make_the_config(pki: dict[str, Authority | str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    ours = _ours(pki)
    monkeypatch.setenv("LTRR_TOKEN_FILE", str(pki["token"]))
    args = build_parser().parse_args(["feedback", "d", "e", "--tls-ca", ours.ca, "--tls-server-name", "ltrr.internal"])
    assert security_from_args(args) == SecurityConfig(ca=ours.ca, server_name="ltrr.internal",
                                                      token_file=str(pki["token"]))
    args = build_parser().parse_args(["shard", "lexical", "--index", "x", "--tls-cert", ours.cert, "--tls-key",
                                      ours.key, "--tls-ca", ours.ca, "--tls-client-auth", "--token-file",
                                      str(pki["wrong"]), "--health-port", "7"])
    assert args.health_port == 7
    assert security_from_args(args) == SecurityConfig(cert=ours.cert, key=ours.key, ca=ours.ca, client_auth=True,
                                                      token_file=str(pki["wrong"]))  # the flag wins over the env


# -- a real shard with TLS and a token --------------------------------------------------------------

@pytest.fixture(scope="module")
def tls_memory(built: Path, pki: dict[str, Authority | str], tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[ServerProcess]:
    ours, state = _ours(pki), tmp_path_factory.mktemp("tls-memory")
    server = spawn(shard_args("memory", built / "index", {"state_dir": state}, server_flags(ours, str(pki["token"]))),
                   security=SecurityConfig(ca=ours.ca))
    try:
        yield server
    finally:
        assert server.stop() == 0, server.log_text()


def test_tls_round_trip_and_reads_need_no_token(tls_memory: ServerProcess, pki: dict[str, Authority | str]) -> None:
    with ShardClient(tls_memory.address, security=SecurityConfig(ca=_ours(pki).ca)) as client:
        assert client.describe().strategy == "memory"
        assert client.retrieve("love night", 5).strategy == "memory"


def test_plaintext_to_a_tls_server_fails(tls_memory: ServerProcess) -> None:
    with ShardClient(tls_memory.address) as client, pytest.raises(grpc.RpcError) as err:
        client.describe(timeout=3)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_server_certificate_from_another_ca_is_refused(tls_memory: ServerProcess,
                                                         pki: dict[str, Authority | str]) -> None:
    rogue = pki["rogue"]
    assert isinstance(rogue, Authority)
    with ShardClient(tls_memory.address, security=SecurityConfig(ca=rogue.ca)) as client, \
            pytest.raises(grpc.RpcError) as err:
        client.describe(timeout=3)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(("token", "expected"), [
    ("", grpc.StatusCode.UNAUTHENTICATED),
    ("wrong", grpc.StatusCode.PERMISSION_DENIED),
])
def test_learn_without_the_right_token_is_refused(tls_memory: ServerProcess, pki: dict[str, Authority | str],
                                                  catalog: list[Entity], token: str, expected: grpc.StatusCode
                                                  ) -> None:
    security = SecurityConfig(ca=_ours(pki).ca, token_file=str(pki[token]) if token else "")
    with ShardClient(tls_memory.address, security=security) as client:
        before = client.describe().params["events"]
        with pytest.raises(grpc.RpcError) as err:
            client.learn([_event(0, catalog[0].id)])
        assert err.value.code() == expected
        assert client.describe().params["events"] == before


def test_learn_with_the_token_is_applied(tls_memory: ServerProcess, pki: dict[str, Authority | str],
                                        catalog: list[Entity]) -> None:
    security = SecurityConfig(ca=_ours(pki).ca, token_file=str(pki["token"]))
    with ShardClient(tls_memory.address, security=security) as client:
        before = int(client.describe().params["events"])
        assert client.learn([_event(1, catalog[0].id), _event(2, catalog[1].id)]).accepted == 2
        assert int(client.describe().params["events"]) == before + 2


# -- mutual TLS -------------------------------------------------------------------------------------

def test_mutual_tls_requires_a_client_certificate_from_the_ca(built: Path, pki: dict[str, Authority | str]) -> None:
    ours, rogue = _ours(pki), pki["rogue"]
    assert isinstance(rogue, Authority)
    as_client = SecurityConfig(ca=ours.ca, cert=ours.cert, key=ours.key)
    server = spawn(shard_args("lexical", built / "index", extra=server_flags(ours, str(pki["token"]),
                                                                             client_auth=True)),
                   security=as_client)
    try:
        with ShardClient(server.address, security=as_client) as client:
            assert client.retrieve("love", 3).strategy == "lexical"
        for anonymous in (SecurityConfig(ca=ours.ca), SecurityConfig(ca=ours.ca, cert=rogue.cert, key=rogue.key)):
            with ShardClient(server.address, security=anonymous) as client, pytest.raises(grpc.RpcError) as err:
                client.retrieve("love", 3, timeout=3)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        assert server.stop() == 0, server.log_text()


# -- the broker: TLS both ways, the token on Feedback and on its Learn calls to the memory shard ----

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _memory_events(address: str, security: SecurityConfig, at_least: int, timeout_s: float = 60.0) -> int:
    """The memory shard's event count once it reaches `at_least` (a bounded wait, not a timing check)."""
    deadline = time.monotonic() + timeout_s
    with ShardClient(address, security=security) as client:
        while True:
            got = int(client.describe().params["events"])
            if got >= at_least or time.monotonic() > deadline:
                return got
            time.sleep(0.1)


def test_broker_over_tls_shards_requires_the_token_on_feedback(built: Path, tls_memory: ServerProcess,
                                                               pki: dict[str, Authority | str]) -> None:
    ours = _ours(pki)
    reader = SecurityConfig(ca=ours.ca)
    lexical = spawn(shard_args("lexical", built / "index", extra=server_flags(ours, str(pki["token"]))),
                    security=reader)
    health_port = _free_port()
    args = broker_args(config(built, "state-tls", policy="static"),
                       {"lexical": lexical.address, "memory": tls_memory.address}, 0)
    broker = spawn([*args, *server_flags(ours, str(pki["token"])), "--health-port", str(health_port)],
                   security=reader)
    try:
        wait_serving(f"127.0.0.1:{health_port}", timeout=10)  # the plaintext health port, for probes
        with ShardClient(tls_memory.address, security=reader) as client:
            events_before = int(client.describe().params["events"])
        with BrokerClient(broker.address, security=reader) as client:
            response = client.search("love night", k=5, budget_ms=2000)
            assert response.results and not response.degraded
            decision, entity = response.decision_id, response.results[0].entity_id
            with pytest.raises(grpc.RpcError) as err:
                client.feedback(decision, entity, "click", event_id="fb-1")
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with BrokerClient(broker.address, security=SecurityConfig(ca=ours.ca, token_file=str(pki["wrong"]))) as c, \
                pytest.raises(grpc.RpcError) as err:
            c.feedback(decision, entity, "click", event_id="fb-1")
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        writer = SecurityConfig(ca=ours.ca, token_file=str(pki["token"]))
        with BrokerClient(broker.address, security=writer) as client:
            assert not client.feedback(decision, entity, "click", event_id="fb-1").duplicate
        # the broker's outbox reached the memory shard's Learn over TLS, with the token
        assert _memory_events(tls_memory.address, reader, events_before + 1) == events_before + 1
        assert broker.stop() == 0, broker.log_text()
    finally:
        broker.stop()
        lexical.stop()
