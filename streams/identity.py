"""Customer identity for repeat-contact matching: normalise an identifier, then key on a keyed hash.

A contact's `customer` object may hold `id`, `phone` and/or `email`. The first usable one, in that
order, identifies the customer (docs/metrics.md "Repeat contacts"):
    id     the CRM/customer id, trimmed (case kept: ids are opaque)
    phone  E.164 via `phonenumbers`; national numbers are read in settings.default_region
    email  trimmed and lower-cased as a whole
The result is HMAC-SHA256(settings.identity_secret, "<kind>:<normalised>") as hex. Only this hash is
ever stored, produced or used as a key; the raw identifier is dropped here. Pure: no I/O, no state.
"""
from __future__ import annotations

import hashlib
import hmac
import re

import phonenumbers

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# Caller-id placeholders that are not a customer: never match two customers on them.
_ANONYMOUS = frozenset({"anonymous", "unknown", "restricted", "private", "withheld", "unavailable", "none"})
_URI_SCHEMES = ("tel:", "sip:", "sips:", "whatsapp:", "client:")


def normalise_phone(raw: str, default_region: str) -> str | None:
    """E.164 ("+37121234567") or None when the text cannot be a phone number."""
    text = raw.strip()
    if not text or text.lower() in _ANONYMOUS:
        return None
    if text.lower().startswith(_URI_SCHEMES):
        text = text.split(":", 1)[1].split("@", 1)[0].split(";", 1)[0]
    try:
        number = phonenumbers.parse(text, default_region or None)
    except phonenumbers.NumberParseException:
        return None
    # "possible" (right length for the country), not "valid": new number ranges must still match.
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_email(raw: str) -> str | None:
    """The whole address lower-cased; None if it is not an address."""
    text = raw.strip()
    if text.lower().startswith("mailto:"):
        text = text[len("mailto:"):]
    text = text.lower()
    return text if _EMAIL.match(text) else None


def normalise_id(raw: str) -> str | None:
    text = raw.strip()
    return text if text and text.lower() not in _ANONYMOUS else None


def normalise(customer: dict | None, default_region: str) -> tuple[str, str] | None:
    """(kind, normalised identifier) from the first usable of id, phone, email; None if none is."""
    if not customer:
        return None
    for kind, normaliser in (("id", normalise_id),
                             ("phone", lambda v: normalise_phone(v, default_region)),
                             ("email", normalise_email)):
        value = customer.get(kind)
        if isinstance(value, str):
            normalised = normaliser(value)
            if normalised:
                return kind, normalised
    return None


def keyed_hash(secret: str, kind: str, normalised: str) -> str:
    """Hex HMAC-SHA256: stable for one secret, useless to anyone without it (no rainbow tables of phones)."""
    return hmac.new(secret.encode(), f"{kind}:{normalised}".encode(), hashlib.sha256).hexdigest()


def customer_key(customer: dict | None, secret: str, default_region: str) -> str | None:
    """The customer's matching key, or None when the contact carries no usable identifier."""
    found = normalise(customer, default_region)
    return keyed_hash(secret, *found) if found else None
