"""Unsubscribe tokens: what one recipient's link names, and that nobody can forge or alter one."""

from __future__ import annotations

import pytest

from factory_dagster.delivery.unsubscribe import (
    BadToken,
    MissingSecret,
    make_token,
    read_token,
    secret_from_env,
    unsubscribe_url,
)

SECRET = b"s" * 40


def test_a_token_names_its_send_and_the_lower_cased_address():
    request = read_token(SECRET, make_token(SECRET, "send_1", " Ada@Example.COM "))
    assert (request.send_id, request.email) == ("send_1", "ada@example.com")


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # signature changed
        lambda t: make_token(b"t" * 40, "send_1", "ada@example.com"),  # another secret
        lambda t: t.split(".")[0],  # no signature
        lambda t: "." + t.split(".")[1],  # no payload
        lambda t: "%%%." + t.split(".")[1],  # payload not base64
        lambda t: "",
    ],
)
def test_a_forged_or_altered_token_is_refused(tamper):
    with pytest.raises(BadToken):
        read_token(SECRET, tamper(make_token(SECRET, "send_1", "ada@example.com")))


def test_another_recipients_payload_under_this_signature_is_refused():
    mine, theirs = make_token(SECRET, "send_1", "ada@example.com"), make_token(SECRET, "send_2", "bob@example.com")
    with pytest.raises(BadToken):
        read_token(SECRET, theirs.split(".")[0] + "." + mine.split(".")[1])


def test_the_secret_comes_from_the_environment_and_must_be_long():
    assert secret_from_env({"FACTORY_UNSUBSCRIBE_SECRET": "x" * 32}) == b"x" * 32
    for environ in ({}, {"FACTORY_UNSUBSCRIBE_SECRET": "short"}):
        with pytest.raises(MissingSecret, match="FACTORY_UNSUBSCRIBE_SECRET"):
            secret_from_env(environ)


def test_the_url_carries_the_token_whole():
    token = make_token(SECRET, "send_1", "ada@example.com")
    assert unsubscribe_url("https://u.example.com/", token) == f"https://u.example.com/unsubscribe/{token}"
