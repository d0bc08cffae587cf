"""Encrypted Temporal payloads: AES-256-GCM, the key id in each payload's metadata.

Whoever runs the Temporal cluster (or a hosted service) stores every workflow input,
result, query answer, update and activity argument. With INVITES_PAYLOAD_KEYS set
("id1:base64key,id2:base64key"), every process of ours encrypts them before they leave
and decrypts them on the way back, so the cluster holds ciphertext: the first key
encrypts, every listed key decrypts (rotation: put the new key first, keep the old ones
until no open invitation still holds payloads written with them). Failure messages and
stack traces are moved into an encrypted attribute too.

What stays in clear, because the cluster must read it: workflow ids (ours contain the
invitee's email), search attributes (InviteeEmail...), task queues, timer and activity
names. Payloads written before encryption was switched on still decode (they carry no
encryption metadata). Modelled on temporalio/samples-python `encryption`.

    python payload_codec.py new-key [ID]     # prints "ID:base64key" for INVITES_PAYLOAD_KEYS
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import sys
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12
KEY_BYTES = 32


class PayloadKeyError(ValueError):
    """INVITES_PAYLOAD_KEYS is malformed, or a payload names a key we do not have."""


def parse_keys(spec: str) -> list[tuple[str, bytes]]:
    """"id1:base64,id2:base64" -> [(id, key)]; never echoes key material in errors."""
    keys: list[tuple[str, bytes]] = []
    for n, item in enumerate((i.strip() for i in spec.split(",")), start=1):
        if not item:
            continue
        key_id, sep, encoded = item.partition(":")
        if not sep or not key_id.strip():
            raise PayloadKeyError(f"INVITES_PAYLOAD_KEYS entry {n} is not 'id:base64key'")
        try:
            key = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise PayloadKeyError(f"INVITES_PAYLOAD_KEYS key {key_id!r} is not base64") from None
        if len(key) != KEY_BYTES:
            raise PayloadKeyError(f"INVITES_PAYLOAD_KEYS key {key_id!r} must be {KEY_BYTES} "
                                  f"bytes (AES-256), not {len(key)}")
        if any(k == key_id.strip() for k, _ in keys):
            raise PayloadKeyError(f"INVITES_PAYLOAD_KEYS lists key id {key_id!r} twice")
        keys.append((key_id.strip(), key))
    if not keys:
        raise PayloadKeyError("INVITES_PAYLOAD_KEYS is set but lists no key")
    return keys


def new_key_spec(key_id: str = "k1") -> str:
    return f"{key_id}:{base64.b64encode(os.urandom(KEY_BYTES)).decode()}"


class EncryptionCodec(PayloadCodec):
    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise PayloadKeyError("an encryption codec needs at least one key")
        self.key_id, key = keys[0]
        self._encryptor = AESGCM(key)
        self._decryptors = {kid: AESGCM(k) for kid, k in keys}

    @classmethod
    def from_spec(cls, spec: str) -> EncryptionCodec:
        return cls(parse_keys(spec))

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out = []
        for p in payloads:
            nonce = os.urandom(NONCE_BYTES)
            # The key id is authenticated too: a payload cannot be relabelled to another key.
            sealed = self._encryptor.encrypt(nonce, p.SerializeToString(), self.key_id.encode())
            out.append(Payload(metadata={"encoding": ENCODING, KEY_ID: self.key_id.encode()},
                               data=nonce + sealed))
        return out

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out = []
        for p in payloads:
            if p.metadata.get("encoding", b"") != ENCODING:
                out.append(p)  # written before encryption was on: plain, as it was stored
                continue
            key_id = p.metadata.get(KEY_ID, b"").decode()
            decryptor = self._decryptors.get(key_id)
            if decryptor is None:
                raise PayloadKeyError(f"payload encrypted with key {key_id!r}, which is not "
                                      "in INVITES_PAYLOAD_KEYS")
            try:
                plain = decryptor.decrypt(p.data[:NONCE_BYTES], p.data[NONCE_BYTES:],
                                          key_id.encode())
            except InvalidTag:
                raise PayloadKeyError(f"payload does not decrypt with key {key_id!r}") from None
            out.append(Payload.FromString(plain))
        return out


def encrypting_converter(base: DataConverter, spec: str) -> DataConverter:
    """`base` (our pydantic converter) with the codec, failure texts encrypted too."""
    return dataclasses.replace(
        base, payload_codec=EncryptionCodec.from_spec(spec),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "new-key":
        print(new_key_spec(sys.argv[2] if len(sys.argv) > 2 else "k1"))
    else:
        print(__doc__.rsplit("\n\n", 1)[-1].strip(), file=sys.stderr)
        sys.exit(2)
