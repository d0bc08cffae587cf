"""SSO just-in-time (issue #14) over real HTTP (uvicorn on 127.0.0.1, the link handler app
with the /sso router), a real worker on the dev server, and a real DNS server for the
domain's verification. Tokens are signed with keys generated here (cryptography).

A first login on a verified domain provisions a member (licensed while seats last, once);
a person with an individual account gets an invitation accepted at once, which still
meets the 1009 check and the refund choice; forged, expired, wrong-audience/issuer,
unsigned, HS256-with-the-public-key and replayed tokens are 401; emails of unverified (or
someone else's, or lost) domains are 403. None of the refused logins writes a user.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import Engine, func
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from config import Settings
from demo.seed import IndividualSpec, create_individual, create_org
from domains.idtoken import IdTokenVerifier, SsoRefused
from domains.verification import DomainClaims
from linkhandler.app import create_app
from records.ids import invitation_id
from records.tables import Invitation, Role, User
from tests.conftest import free_port, new_worker
from tests.dns_server import Zone, dns_server
from tests.workflow_helpers import eventually

ISSUER, AUDIENCE = "https://idp.corp.test", "invites-test-client"


@dataclass
class Keys:
    idp: rsa.RSAPrivateKey
    forger: rsa.RSAPrivateKey
    ec_forger: ec.EllipticCurvePrivateKey

    @property
    def public_pem(self) -> str:
        return self.idp.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(rsa.generate_private_key(65537, 2048), rsa.generate_private_key(65537, 2048),
                ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(scope="module")
def zone() -> Iterator[Zone]:
    with dns_server() as z:
        yield z


@pytest.fixture
def sso_settings(settings: Settings, zone: Zone, keys: Keys, tmp_path: Path) -> Settings:
    pem = tmp_path / "idp.pem"  # the setting takes a path (or the PEM text itself)
    pem.write_text(keys.public_pem)
    settings.sso_idp_public_key = str(pem)
    settings.sso_issuer, settings.sso_audience = ISSUER, AUDIENCE
    settings.dns_resolver, settings.dns_timeout_seconds = zone.address, 2
    return settings


@pytest.fixture
async def http(dev_env: WorkflowEnvironment, sso_settings: Settings, engine: Engine,
               smtp: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The link handler served by uvicorn on a free port, and a worker on this test's queue."""
    app = create_app(sso_settings, dev_env.client, engine)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve())
    await eventually(lambda: server.started, within=20, what="uvicorn up")
    try:
        async with new_worker(dev_env.client, sso_settings, engine), \
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            yield client
    finally:
        server.should_exit = True
        await serving


@dataclass
class Company:
    account_id: int
    domain: str


def company(engine: Engine, settings: Settings, zone: Zone, *, seats: int = 10,
            verify: bool = True) -> Company:
    """A paid organisation with a domain claimed and (if `verify`) verified through DNS."""
    tag = uuid.uuid4().hex[:8]
    with Session(engine) as session:
        org = create_org(session, f"Corp {tag}", owner=f"owner@corp-{tag}.test",
                         admins=(f"admin@corp-{tag}.test",), seats=seats)
        session.commit()
        assert org.id is not None
        org_id = org.id
    name = f"corp-{tag}.example"
    claims = DomainClaims(settings, engine)
    claim = claims.add(org_id, f"admin@corp-{tag}.test", name)
    if verify:
        zone.publish(name, claim.token)
        claims.verify(org_id, name)
    return Company(org_id, name)


def id_token(key: Any, nonce: str, email: str, *, alg: str = "RS256",
             drop: tuple[str, ...] = (), **override: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": f"idp|{email}", "email": email,
              "email_verified": True, "given_name": "Sam", "family_name": "Sso",
              "iat": now, "exp": now + 300, "nonce": nonce, **override}
    return jwt.encode({k: v for k, v in claims.items() if k not in drop}, key, algorithm=alg)


def handmade(header: dict[str, Any], claims: dict[str, Any], sign: bytes | None) -> str:
    """A token PyJWT would refuse to make: alg none, or HS256 keyed with the public PEM."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    head = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    mac = b"" if sign is None else hmac.new(sign, head.encode(), hashlib.sha256).digest()
    return f"{head}.{b64(mac)}"


async def start(client: httpx.AsyncClient, account: int) -> str:
    r = await client.post(f"/sso/{account}/start")
    assert r.status_code == 200, r.text
    return str(r.json()["nonce"])


async def login(client: httpx.AsyncClient, account: int, token: str,
                nonce: str) -> httpx.Response:
    return await client.post(f"/sso/{account}/login", data={"id_token": token, "nonce": nonce})


def users(engine: Engine, email: str) -> list[User]:
    with Session(engine) as session:
        return list(session.exec(select(User).where(func.lower(User.email) == email)).all())


@pytest.mark.sqlite_only
def test_the_key_decides_the_one_algorithm(sso_settings: Settings, keys: Keys,
                                           tmp_path: Path) -> None:
    """An ES256 IdP: its tokens verify, RS256 ones are refused; no key: SSO is off (503)."""
    idp = ec.generate_private_key(ec.SECP256R1())
    sso_settings.sso_idp_public_key = idp.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    verifier = IdTokenVerifier(sso_settings)
    assert verifier.algorithms == ["ES256"]
    claims = verifier.verify(id_token(idp, "n1", "a@b.example", alg="ES256"), "n1")
    assert claims["email"] == "a@b.example"
    with pytest.raises(SsoRefused) as refused:
        verifier.verify(id_token(keys.idp, "n1", "a@b.example"), "n1")
    assert (refused.value.status, refused.value.code) == (401, "algorithm_refused")
    sso_settings.sso_idp_public_key = ""
    with pytest.raises(SsoRefused) as off:
        IdTokenVerifier(sso_settings)
    assert (off.value.status, off.value.code) == (503, "sso_not_configured")
    for broken in (str(tmp_path / "no-such-key.pem"), str(tmp_path),
                   "-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n"):
        sso_settings.sso_idp_public_key = broken  # a missing file, a directory, a bad PEM
        with pytest.raises(SsoRefused) as off:
            IdTokenVerifier(sso_settings)
        assert (off.value.status, off.value.code) == (503, "sso_not_configured"), broken
        assert "INVITES_SSO_IDP_PUBLIC_KEY" in off.value.message


async def test_a_first_login_provisions_a_member_once_and_a_replay_is_refused(
    http: httpx.AsyncClient, sso_settings: Settings, engine: Engine, zone: Zone, keys: Keys,
) -> None:
    corp = company(engine, sso_settings, zone, seats=4)  # owner + admin hold 2 seats
    email = f"sam@{corp.domain}"
    nonce = await start(http, corp.account_id)
    token = id_token(keys.idp, nonce, email.upper())
    r = await login(http, corp.account_id, token, nonce)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["outcome"], body["user_type"], body["email"]) == ("provisioned", "licensed",
                                                                    email)
    [user] = users(engine, email)
    assert (user.account_id, user.role, user.user_type) == (corp.account_id, Role.MEMBER,
                                                            "licensed")
    assert (user.first_name, user.last_name) == ("Sam", "Sso")

    replay = await login(http, corp.account_id, token, nonce)
    assert replay.status_code == 401 and replay.json()["error"]["code"] == "nonce_used_or_unknown"

    nonce = await start(http, corp.account_id)  # a new login of the same person
    again = await login(http, corp.account_id, id_token(keys.idp, nonce, email), nonce)
    assert again.status_code == 200 and again.json()["outcome"] == "already_member"
    assert len(users(engine, email)) == 1

    # Two first logins of one person at the same moment: one user.
    twin = f"twin@{corp.domain}"
    nonces = [await start(http, corp.account_id) for _ in range(2)]
    both = await asyncio.gather(*(login(http, corp.account_id, id_token(keys.idp, n, twin), n)
                                  for n in nonces))
    assert sorted(r.json()["outcome"] for r in both) == ["already_member", "provisioned"]
    assert len(users(engine, twin)) == 1

    other = f"alex@{corp.domain}"  # the seats are all taken now: a basic member
    nonce = await start(http, corp.account_id)
    r = await login(http, corp.account_id, id_token(keys.idp, nonce, other), nonce)
    assert r.status_code == 200 and r.json()["user_type"] == "basic"
    assert [u.user_type for u in users(engine, other)] == ["basic"]


@pytest.mark.sqlite_only
async def test_bad_tokens_are_401_and_foreign_domains_403_and_nothing_is_written(
    http: httpx.AsyncClient, sso_settings: Settings, engine: Engine, zone: Zone, keys: Keys,
) -> None:
    corp = company(engine, sso_settings, zone)
    email = f"eve@{corp.domain}"
    now = int(time.time())
    pem = keys.public_pem.encode()
    cases: list[tuple[str, Any, str]] = [
        ("forged (another RSA key)", lambda n: id_token(keys.forger, n, email), "bad_signature"),
        ("forged (ES256)", lambda n: id_token(keys.ec_forger, n, email, alg="ES256"),
         "algorithm_refused"),
        ("expired", lambda n: id_token(keys.idp, n, email, iat=now - 900, exp=now - 600),
         "token_expired"),
        ("wrong audience", lambda n: id_token(keys.idp, n, email, aud="someone-else"),
         "wrong_audience"),
        ("wrong issuer", lambda n: id_token(keys.idp, n, email, iss="https://evil.test"),
         "wrong_issuer"),
        ("no nonce claim", lambda n: id_token(keys.idp, n, email, drop=("nonce",)),
         "invalid_token"),
        ("another login's nonce", lambda n: id_token(keys.idp, "not-" + n, email),
         "nonce_mismatch"),
        ("alg none", lambda n: handmade({"alg": "none", "typ": "JWT"}, {
            "iss": ISSUER, "aud": AUDIENCE, "sub": "x", "email": email, "iat": now,
            "exp": now + 300, "nonce": n}, None), "algorithm_refused"),
        ("HS256 keyed with the public key", lambda n: handmade({"alg": "HS256", "typ": "JWT"}, {
            "iss": ISSUER, "aud": AUDIENCE, "sub": "x", "email": email, "iat": now,
            "exp": now + 300, "nonce": n}, pem), "algorithm_refused"),
        ("garbage", lambda n: "not.a.jwt", "invalid_token"),
    ]
    for what, make, code in cases:
        nonce = await start(http, corp.account_id)
        r = await login(http, corp.account_id, make(nonce), nonce)
        assert r.status_code == 401, (what, r.text)
        assert r.json()["error"]["code"] == code, (what, r.json())
        assert r.headers["www-authenticate"].startswith("Bearer")
    r = await http.post(f"/sso/{corp.account_id}/login", json={"nonce": "x"})
    assert r.status_code == 401 and r.json()["error"]["field"] == "id_token"

    # Signed properly, but not a person of a verified domain of this account.
    elsewhere = company(engine, sso_settings, zone)  # verified, by another account
    pending = company(engine, sso_settings, zone, verify=False)
    for address in (f"eve@{elsewhere.domain}", f"eve@{pending.domain}", "eve@gmail.com"):
        nonce = await start(http, corp.account_id)
        r = await login(http, corp.account_id, id_token(keys.idp, nonce, address), nonce)
        assert r.status_code == 403, (address, r.text)
        assert r.json()["error"] == {"code": "domain_not_verified", "field": "email",
                                     "message": r.json()["error"]["message"]}
        assert address in r.json()["error"]["message"]
    unverified: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
        ("false", {"email_verified": False}, ()), ("missing", {}, ("email_verified",)),
        ("the string false", {"email_verified": "false"}, ()), ("0", {"email_verified": 0}, ()),
        ("1", {"email_verified": 1}, ()), ("null", {"email_verified": None}, ())]
    for what, override, drop in unverified:
        nonce = await start(http, corp.account_id)
        r = await login(http, corp.account_id,
                        id_token(keys.idp, nonce, email, drop=drop, **override), nonce)
        assert r.status_code == 403, (what, r.text)
        assert r.json()["error"]["code"] == "email_not_verified", (what, r.json())
    assert users(engine, email) == []
    yes = f"yes@{corp.domain}"  # the JSON string "true" some IdPs send is a yes
    nonce = await start(http, corp.account_id)
    r = await login(http, corp.account_id,
                    id_token(keys.idp, nonce, yes, email_verified="true"), nonce)
    assert r.status_code == 200 and r.json()["outcome"] == "provisioned", r.text

    # Lost verification: the record is withdrawn and the re-check runs.
    zone.withdraw(corp.domain)
    assert DomainClaims(sso_settings, engine).recheck_all().lost >= 1
    nonce = await start(http, corp.account_id)
    r = await login(http, corp.account_id, id_token(keys.idp, nonce, email), nonce)
    assert r.status_code == 403
    assert users(engine, email) == []
    assert (await http.post("/sso/999999/start")).status_code == 404
    for out_of_range in ("100000000000000000000", str(2**63), "0", "-1"):
        r = await http.post(f"/sso/{out_of_range}/start")  # a 422, not an OverflowError
        assert r.status_code == 422, (out_of_range, r.text)
        r = await http.post(f"/sso/{out_of_range}/login", data={"id_token": "x", "nonce": "y"})
        assert r.status_code == 422, (out_of_range, r.text)

    sso_settings.sso_idp_public_key = str(sso_settings.sso_idp_public_key) + ".gone"
    nonce = await start(http, corp.account_id)
    r = await login(http, corp.account_id, id_token(keys.idp, nonce, email), nonce)
    assert r.status_code == 503 and r.json()["error"]["code"] == "sso_not_configured", r.text


@pytest.mark.sqlite_only
async def test_people_with_an_individual_account_are_invited_and_accepted_at_once(
    http: httpx.AsyncClient, sso_settings: Settings, engine: Engine, zone: Zone, keys: Keys,
) -> None:
    corp = company(engine, sso_settings, zone)
    free, paid, blocked = (f"{who}@{corp.domain}" for who in ("free", "paid", "blocked"))
    with Session(engine) as session:
        create_individual(session, sso_settings.recordings_dir, IndividualSpec(email=free))
        create_individual(session, sso_settings.recordings_dir,
                          IndividualSpec(email=paid, price_minor=14_990))
        create_individual(session, sso_settings.recordings_dir, IndividualSpec(
            email=blocked, other_users=(f"helper.{uuid.uuid4().hex[:6]}@example.com",)))
        session.commit()

    async def sso(email: str) -> dict[str, Any]:
        nonce = await start(http, corp.account_id)
        r = await login(http, corp.account_id, id_token(keys.idp, nonce, email), nonce)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        assert body["outcome"] == "invitation"
        assert body["invitation_id"] == invitation_id(corp.account_id, email)
        return body

    body = await sso(free)
    assert body["invitation"]["accept"]["outcome"] == "accepted"

    def joined() -> bool:
        with Session(engine) as session:
            row = session.get(Invitation, body["invitation_id"])
            [user] = session.exec(select(User).where(User.email == free)).all()
            return row is not None and row.status == "completed" and \
                user.account_id == corp.account_id

    await eventually(joined, within=60, what="the SSO invitation completes the join")
    with Session(engine) as session:
        row = session.get(Invitation, body["invitation_id"])
        assert row is not None
        owner = session.get(User, row.invited_by_user_id)
        assert owner is not None and owner.role == Role.OWNER  # the account's owner invites
    nonce = await start(http, corp.account_id)  # a later login finds the member
    r = await login(http, corp.account_id, id_token(keys.idp, nonce, free), nonce)
    assert r.status_code == 200 and r.json()["outcome"] == "already_member"

    body = await sso(paid)
    assert body["invitation"]["accept"]["outcome"] == "refund_choice_needed"
    assert body["invitation"]["status"] == "awaiting_refund_choice"

    body = await sso(blocked)
    accept = body["invitation"]["accept"]
    assert (accept["outcome"], accept["error_code"]) == ("blocked", 1009)
    assert body["invitation"]["status"] == "blocked"
