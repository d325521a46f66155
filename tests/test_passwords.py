"""PasswordHasher: passphrases of any length, passlib's bcrypt_sha256 format, old bcrypt hashes."""

from __future__ import annotations

import bcrypt
import pytest

from taskservice.auth import PasswordHasher


@pytest.fixture(scope="module")
def hasher() -> PasswordHasher:
    return PasswordHasher(rounds=4)


def test_new_hashes_are_bcrypt_sha256_and_salted(hasher):
    first, second = hasher.hash("correct horse"), hasher.hash("correct horse")
    assert first.startswith("$bcrypt-sha256$v=2,t=2b,r=4$") and first != second
    assert hasher.is_current(first)
    assert hasher.verify("correct horse", first) and hasher.verify("correct horse", second)
    assert not hasher.verify("correct horsf", first)


@pytest.mark.parametrize("length", [73, 200, 1024])
def test_every_character_of_a_long_passphrase_counts(hasher, length):
    passphrase = "p" * length
    stored = hasher.hash(passphrase)
    assert hasher.verify(passphrase, stored)
    assert not hasher.verify(passphrase[:-1] + "q", stored)
    assert not hasher.verify(passphrase[:72], stored)


def test_nul_and_non_ascii_characters(hasher):
    for password in ("nul\x00inside", "ünïcödé ✓ 🐍" * 10):
        assert hasher.verify(password, hasher.hash(password))
    assert not hasher.verify("nul", hasher.hash("nul\x00inside"))


def test_a_hash_made_by_passlib_verifies(hasher):
    # passlib's bcrypt_sha256 (v2) of "hashcat": the example hash of hashcat's mode 30601.
    stored = "$bcrypt-sha256$v=2,t=2b,r=12$KSOjON/ciJR86a00N5q61.$AmWZucQuHk13FGkQWhgMeiFvBfm2GCy"
    assert hasher.verify("hashcat", stored)
    assert not hasher.verify("hashcaT", stored)


def test_a_plain_bcrypt_hash_from_before_still_verifies(hasher):
    password = "é" * 36  # 72 bytes, the longest a plain bcrypt hash was made of
    legacy = bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()
    assert not hasher.is_current(legacy)
    assert hasher.verify(password, legacy)
    assert not hasher.verify(password[:-1] + "e", legacy)
    # bcrypt reads only 72 bytes, so a longer password with the same start would match it; no
    # such password was ever stored that way, so none matches.
    assert not hasher.verify(password + "x", legacy)


def test_no_stored_hash_never_matches(hasher):
    assert not hasher.verify("not-a-real-password", None)
