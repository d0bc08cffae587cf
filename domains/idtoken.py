"""The IdP's OIDC ID token, checked: signature with the public key from the settings
(INVITES_SSO_IDP_PUBLIC_KEY, PEM text or a path): RS256 for an RSA key, ES256 for a P-256
key and nothing else (never "none", never HS* keyed with the public key); `iss`, `aud`,
`exp`, `iat` with 30 s of clock skew; and the `nonce` the login started with. Every
refusal is an `SsoRefused` naming the check that failed."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from config import Settings

CLOCK_SKEW = timedelta(seconds=30)  # between our clock and the IdP's, for exp/iat


@dataclass
class SsoRefused(Exception):
    """The login is refused; `status` is the HTTP status (401 token, 403 not allowed here,
    404 no such account, 409 cannot join, 503 SSO not configured)."""

    status: int
    code: str
    message: str
    field: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "field": self.field, "message": self.message}


def _public_key(settings: Settings) -> Any:
    text = settings.sso_idp_public_key.strip()
    if not text:
        raise SsoRefused(503, "sso_not_configured",
                         "single sign-on is not configured (INVITES_SSO_IDP_PUBLIC_KEY)")
    try:
        pem = text if text.startswith("-----BEGIN") else Path(text).expanduser().read_text()
    except (OSError, UnicodeError) as exc:
        raise SsoRefused(503, "sso_not_configured", "single sign-on is not configured: "
                         f"INVITES_SSO_IDP_PUBLIC_KEY names a key file that cannot be read "
                         f"({type(exc).__name__}: {exc})") from None
    try:
        return load_pem_public_key(pem.encode())
    except (ValueError, TypeError) as exc:  # not PEM, or not a public key cryptography knows
        raise SsoRefused(503, "sso_not_configured", "single sign-on is not configured: "
                         "INVITES_SSO_IDP_PUBLIC_KEY is not a PEM public key "
                         f"({exc})") from None


class IdTokenVerifier:
    def __init__(self, settings: Settings) -> None:
        if not (settings.sso_issuer and settings.sso_audience):
            raise SsoRefused(503, "sso_not_configured", "single sign-on needs "
                             "INVITES_SSO_ISSUER and INVITES_SSO_AUDIENCE")
        self.key = _public_key(settings)
        if isinstance(self.key, rsa.RSAPublicKey):
            self.algorithms = ["RS256"]
        elif isinstance(self.key, ec.EllipticCurvePublicKey) and \
                isinstance(self.key.curve, ec.SECP256R1):
            self.algorithms = ["ES256"]
        else:
            raise SsoRefused(503, "sso_not_configured", "INVITES_SSO_IDP_PUBLIC_KEY must be an "
                             "RSA or P-256 public key (RS256 or ES256)")
        self.issuer, self.audience = settings.sso_issuer, settings.sso_audience

    def verify(self, token: str, nonce: str) -> dict[str, Any]:
        """The token's claims, or SsoRefused(401) saying which check failed."""
        if not token:
            raise SsoRefused(401, "missing_token", "id_token is required", "id_token")
        try:
            claims: dict[str, Any] = jwt.decode(
                token, self.key, algorithms=self.algorithms, audience=self.audience,
                issuer=self.issuer, leeway=CLOCK_SKEW,
                options={"require": ["exp", "iat", "iss", "aud", "sub", "nonce", "email"]})
        except jwt.ExpiredSignatureError:
            raise SsoRefused(401, "token_expired", "the ID token has expired", "id_token") \
                from None
        except jwt.InvalidAudienceError:
            raise SsoRefused(401, "wrong_audience", "the ID token is for another audience",
                             "id_token") from None
        except jwt.InvalidIssuerError:
            raise SsoRefused(401, "wrong_issuer", "the ID token is from another issuer",
                             "id_token") from None
        except jwt.InvalidAlgorithmError:
            raise SsoRefused(401, "algorithm_refused", f"only {self.algorithms[0]} ID tokens "
                             "are accepted", "id_token") from None
        except jwt.InvalidSignatureError:
            raise SsoRefused(401, "bad_signature", "the ID token's signature is not the "
                             "IdP's", "id_token") from None
        except jwt.PyJWTError as exc:
            raise SsoRefused(401, "invalid_token", f"the ID token is not valid: {exc}",
                             "id_token") from None
        if not nonce or not secrets.compare_digest(str(claims["nonce"]), nonce):
            raise SsoRefused(401, "nonce_mismatch", "the ID token was not issued for this "
                             "login (nonce)", "nonce")
        return claims
