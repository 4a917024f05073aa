"""Secrets never leave in what the tool prints or writes: a DSN's password is removed in
every form a DSN can take, the settings' repr holds none, and secrets may come from files."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from shared.platform.settings import Settings, redact_dsn

PASSWORDS = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF, exclude_characters="'\\"), min_size=4, max_size=20)
RAW_PASSWORDS = st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="@'\\ "), min_size=4, max_size=20)
HOSTS = st.sampled_from(["db", "10.0.0.5", "[::1]", "pg.example.org"])


@settings(max_examples=300, deadline=None)
@given(PASSWORDS, HOSTS, st.sampled_from(["", "?sslmode=require", "?sslmode=require&application_name=x"]))
def test_the_password_is_gone_from_a_url(password: str, host: str, query: str) -> None:
    quoted = quote(password, safe="")
    assume(quoted not in f"postgresql://schoolmig@{host}:5432/schoolmig{query}&sslmode=require")
    dsn = f"postgresql://schoolmig:{quoted}@{host}:5432/schoolmig{query}"
    shown = redact_dsn(dsn)
    assert quoted not in shown and shown.startswith(f"postgresql://schoolmig@{host}:5432/schoolmig")
    in_query = redact_dsn(f"postgresql://schoolmig@{host}/db?password={quoted}&sslmode=require")
    assert quoted not in in_query and "sslmode=require" in in_query


@settings(max_examples=300, deadline=None)
@given(RAW_PASSWORDS, HOSTS)
def test_an_unencoded_password_is_gone_too(password: str, host: str) -> None:
    """A password pasted as it is (``/``, ``?``, ``#``, ``:`` in it), which ``urlsplit`` reads wrong."""
    assume(password not in f"postgresql://schoolmig@{host}:5432/schoolmig")  # only a password that could be seen
    shown = redact_dsn(f"postgresql://schoolmig:{password}@{host}:5432/schoolmig")
    assert password not in shown, shown


@settings(max_examples=300, deadline=None)
@given(PASSWORDS)
def test_the_password_is_gone_from_a_keyword_dsn(password: str) -> None:
    assume(password.replace(" ", "") not in "host=db user=u dbname=d port=5")
    for dsn in (f"host=db user=u password='{password}' dbname=d", f"host=db password={password.replace(' ', '')} port=5"):
        shown = redact_dsn(dsn)
        assert "password" not in shown and "host=db" in shown and password.replace(" ", "") not in shown


def test_settings_show_no_secret_and_read_secret_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "dsn").write_text("postgresql://u:hunter2-db@db/schoolmig\n")
    (tmp_path / "token").write_text("hunter2-token\n")
    (tmp_path / "key").write_text("hunter2-key")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("SCHOOLMIG_API_TOKEN", raising=False)
    monkeypatch.setenv("DATABASE_URL_FILE", str(tmp_path / "dsn"))
    monkeypatch.setenv("SCHOOLMIG_API_TOKEN_FILE", str(tmp_path / "token"))
    monkeypatch.setenv("SCHOOLMIG_SERVICE_KEY_FILE", str(tmp_path / "key"))
    read = Settings()
    assert read.database_url == "postgresql://u:hunter2-db@db/schoolmig" and read.api_token == "hunter2-token"
    assert read.service_key is not None and read.service_key.get_secret_value() == "hunter2-key"
    assert "hunter2" not in repr(read) and "hunter2" not in str(read)
    monkeypatch.setenv("DATABASE_URL", "postgresql://env@db/x")  # the variable itself wins over its file
    assert Settings().database_url == "postgresql://env@db/x"
    monkeypatch.setenv("SCHOOLMIG_API_TOKEN", "")  # empty counts as unset: the file applies
    assert Settings().api_token == "hunter2-token"
    monkeypatch.setenv("SCHOOLMIG_API_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="SCHOOLMIG_API_TOKEN_FILE"):
        Settings()
