"""Customer identity: normalisation and the keyed hash repeat contacts are matched on."""
import hashlib
import hmac

import pytest

from streams.identity import customer_key, keyed_hash, normalise, normalise_email, normalise_phone

SECRET = "s3cret"


@pytest.mark.parametrize("raw", ["+371 21234567", "21234567", "0037121234567", "+371-2123-4567",
                                 "tel:+37121234567", " 2123 4567 "])
def test_latvian_number_in_any_format_is_one_e164_number(raw):
    assert normalise_phone(raw, "LV") == "+37121234567"


def test_national_number_depends_on_the_default_region():
    # 030 1234567 is a Berlin number when the site is in Germany, and no number at all in Latvia
    # (Latvian numbers have 8 digits).
    assert normalise_phone("030 1234567", "DE") == "+49301234567"
    assert normalise_phone("030 1234567", "LV") is None
    assert normalise_phone("21234567", "") is None  # no region: only +country numbers are understood


@pytest.mark.parametrize("raw", ["anonymous", "Unknown", "", "123", "not a number", "+"])
def test_placeholders_and_impossible_numbers_are_not_identifiers(raw):
    assert normalise_phone(raw, "LV") is None


def test_email_is_lower_cased_whole():
    assert normalise_email("  Anna.Berzina@Example.LV ") == "anna.berzina@example.lv"
    assert normalise_email("mailto:ANNA@example.lv") == "anna@example.lv"
    assert normalise_email("anna@localhost") is None
    assert normalise_email("no-at-sign.example.lv") is None


def test_id_wins_over_phone_and_phone_over_email():
    both = {"id": "C-77", "phone": "21234567", "email": "a@b.lv"}
    assert normalise(both, "LV") == ("id", "C-77")
    assert normalise({"phone": "21234567", "email": "a@b.lv"}, "LV") == ("phone", "+37121234567")
    # an unusable phone falls through to the e-mail rather than making the customer unknown
    assert normalise({"phone": "anonymous", "email": "A@B.lv"}, "LV") == ("email", "a@b.lv")
    assert normalise({"id": "  "}, "LV") is None
    assert normalise(None, "LV") is None


def test_key_is_hmac_sha256_of_kind_and_normalised_value():
    expected = hmac.new(b"s3cret", b"phone:+37121234567", hashlib.sha256).hexdigest()
    assert keyed_hash(SECRET, "phone", "+37121234567") == expected
    assert customer_key({"phone": "+371 21234567"}, SECRET, "LV") == expected
    assert customer_key({"phone": "21234567"}, SECRET, "LV") == expected
    assert customer_key({"email": "Anna@Example.lv"}, SECRET, "LV") == customer_key(
        {"email": "anna@example.LV"}, SECRET, "LV")


def test_key_reveals_nothing_without_the_secret():
    key = customer_key({"phone": "21234567"}, SECRET, "LV")
    assert len(key) == 64 and "21234567" not in key
    assert customer_key({"phone": "21234567"}, "another-secret", "LV") != key
    # the same text as an id and as an e-mail are different customers (the kind is hashed too)
    assert customer_key({"id": "a@b.lv"}, SECRET, "LV") != customer_key({"email": "a@b.lv"}, SECRET, "LV")
    assert customer_key({}, SECRET, "LV") is None
