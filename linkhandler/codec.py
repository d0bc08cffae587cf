"""A codec server for the Temporal Web UI and CLI: POST /codec/decode and /codec/encode,
Temporal's remote codec protocol (a JSON `{"payloads": [...]}` in, the same out).

Mounted only when both INVITES_PAYLOAD_KEYS and INVITES_CODEC_AUTH_TOKEN are set: it
decrypts whatever it is sent, so it answers only to the token, either as a header
(`Authorization: Bearer <token>`: the CLI's --codec-auth, a proxy) or as a path segment
(`/codec/<token>/decode`: the Web UI's --ui-codec-endpoint cannot add a header of ours).
The path form puts the token in the UI's settings: whoever can open that UI can decode,
as whoever can read the settings could. CORS allows INVITES_CODEC_CORS_ORIGINS only.
"""

from __future__ import annotations

import hmac

from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.api.common.v1 import Payloads

from config import Settings
from linkhandler.contract import answer
from payload_codec import EncryptionCodec, PayloadKeyError

MAX_BODY = 4 * 1024 * 1024  # Temporal's own payload limit is 2 MB per payload


def codec_app(settings: Settings) -> Starlette | None:
    keys = settings.payload_keys.get_secret_value()
    token = settings.codec_auth_token.get_secret_value()
    if not keys or not token:
        return None
    codec = EncryptionCodec.from_spec(keys)

    def authorised(request: Request) -> bool:
        given = request.path_params.get("token")
        if given is None:
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer":
                return False
        return hmac.compare_digest(given.strip().encode(), token.encode())

    async def run(request: Request, decode: bool) -> Response:
        if not authorised(request):
            return JSONResponse(answer("unauthorized", "This codec endpoint needs its token.",
                                       error_code="unauthorized"), status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        body = await request.body()
        try:
            if len(body) > MAX_BODY:
                raise ValueError("body too large")
            payloads = json_format.Parse(body, Payloads())
            done = await (codec.decode if decode else codec.encode)(payloads.payloads)
        except (json_format.ParseError, PayloadKeyError, ValueError) as exc:
            return JSONResponse(answer("invalid_payloads", f"Cannot {'de' if decode else 'en'}"
                                       f"code these payloads: {exc}",
                                       error_code="invalid_payloads"), status_code=400)
        return Response(json_format.MessageToJson(Payloads(payloads=done)),
                        media_type="application/json")

    async def decode(request: Request) -> Response:
        return await run(request, decode=True)

    async def encode(request: Request) -> Response:
        return await run(request, decode=False)

    origins = [o.strip() for o in settings.codec_cors_origins.split(",") if o.strip()]
    return Starlette(
        routes=[Route("/decode", decode, methods=["POST"]),
                Route("/encode", encode, methods=["POST"]),
                Route("/{token}/decode", decode, methods=["POST"]),
                Route("/{token}/encode", encode, methods=["POST"])],
        middleware=[Middleware(CORSMiddleware, allow_origins=origins, allow_methods=["POST"],
                               allow_headers=["Authorization", "Content-Type", "X-Namespace"])],
    )
