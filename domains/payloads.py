"""Payloads of DomainCheckWorkflow and its activity (plain pydantic, no table classes)."""

from __future__ import annotations

from pydantic import BaseModel


class RecheckInput(BaseModel):
    """Nothing to choose yet: every claim is re-checked. A model, so fields can be added."""


class RecheckResult(BaseModel):
    checked: int = 0
    verified: int = 0  # newly verified (pending or lost before)
    lost: int = 0  # newly lost: the TXT record is gone
    unreachable: int = 0  # the resolver did not answer: left as they were
    refused: int = 0  # record found, but another account holds the name verified
