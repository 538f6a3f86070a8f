"""The refusals of the domain: what services raise when a request cannot be done, with the reason the
client is told. Nothing here knows HTTP; `satellite.api.errors` maps each kind to a status, in one place.
"""

from __future__ import annotations

from decimal import Decimal


class Refused(Exception):
    """A request the service will not carry out; `reason` is said to the client as it is."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidUpload(Refused):
    """The body is not what was announced: empty, cut short, or not the size its tag gives."""


class TooLarge(Refused):
    """The body is larger than the server accepts."""


class EncodedBody(Refused):
    """The body carries a Content-Encoding: limits apply to the bytes stored, so it must come raw."""


class SlowBody(Refused):
    """The body came slower than the server's minimum pace."""


class UnsupportedTransferCoding(Refused):
    """The body is framed with a transfer coding other than chunked."""


class QuotaExceeded(Refused):
    """Storing this would leave the account without the prepaid time the rule requires."""

    def __init__(self, reason: str, *, shortfall_byte_seconds: Decimal, gb_months_needed: int) -> None:
        super().__init__(reason)
        self.shortfall_byte_seconds = shortfall_byte_seconds
        self.gb_months_needed = gb_months_needed


class ContentBlocked(Refused):
    """The content is on the blocklist."""


class AccountBlocked(Refused):
    """The account is blocked: it may not store or buy anything."""


class NotOwned(Refused):
    """The account has no such file."""


class HashMismatch(Refused):
    """The body's sha256 is not the one the request said it would be (`X-SHA-256`, a token's `x`)."""


class NotAuthorised(Refused):
    """A valid token that does not cover this: another blob, another account's list."""


class OriginRefused(Refused):
    """A URL the server will not fetch (mirror): not http(s), not a public address, too many redirects."""


class OriginUnreachable(Refused):
    """The origin of a mirror could not be fetched, or answered with something unusable."""


class UnsupportedMedia(Refused):
    """The body is not of a media type the server processes (the reason names the type it is)."""


class UnprocessableMedia(Refused):
    """The media is of a type the server processes, but this one cannot be: over a limit (pixels,
    frames), truncated or corrupt, or it took longer than processing may."""


class ProcessingBusy(Refused):
    """Every image worker stayed busy for longer than a job may wait."""


class NothingToReport(Refused):
    """A report about nothing this server has."""


class ProofRefused(Refused):
    """A proof of payment (BUD-07) that proves nothing usable: not a preimage, not ours, not paid, or
    already spent."""


class QueueFull(Refused):
    """The server keeps no more of these until the operator has dealt with some (reports)."""


class OfferUnavailable(Refused):
    """The purchase cannot go on: unknown, expired or used offer, or a payment event that breaks a rule."""


class LightningUnavailable(Refused):
    """The Lightning node cannot be reached or did not answer in time; try again shortly."""


class MintUnavailable(Refused):
    """A trusted Cashu mint cannot be reached or did not answer in time: the token is not lost, and
    the same request may be sent again with it."""


class LightningMisbehaved(Refused):
    """The Lightning node refused the request or answered with something we cannot use."""


class RateUnavailable(Refused):
    """No exchange rate is known right now."""


class DatabaseBusy(Refused):
    """No database connection became free in time."""


class RateLimited(Refused):
    """Too many requests of one kind from one client or one account; `retry_after` seconds until the
    next would be accepted."""

    def __init__(self, reason: str, *, retry_after: float) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class TooManyUploads(Refused):
    """The account already has as many uploads in progress as it may."""
