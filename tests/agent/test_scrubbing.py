"""The one secret scrubber (agentswarm.scrubbing): every form of a secret, before any cut."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, quote_plus

import pytest

from agentswarm.scrubbing import (
    MASK,
    clean_data,
    clean_text,
    scrub,
    scrub_clip,
    scrub_data,
    secrets_from_env,
)

KEY = "sk-live-Abc123+/xyz=SECRET"  # + / = so that base64, URL-safe and percent forms all differ
TOKEN = "ghp_0123456789abcdefSECRET"


def windows(form: str, size: int = 8) -> list[str]:
    """Every `size`-character piece of a form: none may survive."""
    return [form[i:i + size] for i in range(len(form) - size + 1)]


def assert_gone(text: str, form: str, size: int = 8) -> None:
    left = [w for w in windows(form, size) if w in text]
    assert not left, (form, left, text)


def test_plain_secret_is_blanked_everywhere() -> None:
    text = f"key={KEY}; again {KEY}. token {TOKEN}!"
    out = scrub(text, [KEY, TOKEN])
    assert KEY not in out and TOKEN not in out
    assert out == f"key={MASK}; again {MASK}. token {MASK}!"


@pytest.mark.parametrize("prefix", [b"", b"a", b"ab", b"abc", b"Authorization: Bearer "])
@pytest.mark.parametrize("encode", [base64.b64encode, base64.urlsafe_b64encode])
def test_base64_at_every_alignment_and_url_safe(prefix: bytes, encode) -> None:
    stream = encode(prefix + KEY.encode() + b" and then some trailing bytes").decode()
    out = scrub(f"blob: {stream}", [KEY])
    assert out.count(MASK) == 1
    # Every character that depends on the key alone is gone: only the (at most two) characters at each
    # edge that mix the key's bits with its neighbours' survive.
    removed = len(stream) - (len(out) - len("blob: ") - len(MASK))
    assert removed >= len(KEY) * 4 // 3 - 2


def test_base64_of_the_exact_secret_with_padding() -> None:
    for value in (KEY, TOKEN, TOKEN + "x", TOKEN + "xy"):
        b64 = base64.b64encode(value.encode()).decode()
        out = scrub(b64, [value])
        assert_gone(out, b64, 6)


def test_hex_either_case() -> None:
    lower = KEY.encode().hex()
    out = scrub(f"dump {lower} / {lower.upper()} end", [KEY])
    assert out == f"dump {MASK} / {MASK} end"


def test_percent_encoded_forms() -> None:
    every_byte = "".join(f"%{b:02X}" for b in KEY.encode())
    for form in (quote(KEY, safe=""), quote(KEY), quote_plus(KEY), quote(KEY, safe="").lower(), every_byte):
        assert form != KEY
        out = scrub(f"https://example.com/?k={form}&x=1", [KEY])
        assert out == f"https://example.com/?k={MASK}&x=1", form


def test_json_escaped_form() -> None:
    secret = 'pass"word\\with-quotes'
    out = scrub(json.dumps({"v": secret}), [secret])
    assert json.loads(out) == {"v": MASK}


def test_short_secrets_and_empty_values_are_ignored() -> None:
    text = "the main branch of the repo: abc1234 main"
    assert scrub(text, ["main", "abc1234", "", None, "   "]) == text  # shorter than 8: nothing common blanked
    assert scrub(text, []) == text


def test_a_secret_split_by_a_cut_does_not_survive_scrub_clip() -> None:
    text = "x" * 90 + KEY + "y" * 100
    cut_inside_the_key = 100
    # Cutting first leaves the key's head, which no scrubber can recognise any more ...
    naive = scrub(text[:cut_inside_the_key], [KEY])
    assert KEY[:10] in naive
    # ... scrubbing first does not.
    out = scrub_clip(text, [KEY], cut_inside_the_key)
    assert out is not None and len(out) <= cut_inside_the_key
    assert KEY[:4] not in out and out.startswith("x" * 60)
    assert scrub_clip("x" * 10 + KEY + "y" * 100, [KEY], 40) == "x" * 10 + MASK + "y" * 8 + "... [73 more chars]"


def test_scrub_data_walks_lists_dicts_and_keys() -> None:
    hex_form = TOKEN.encode().hex()
    data = {"a": [KEY, {"b": f"x {hex_form} y"}], KEY: 3, "n": 1.5, "none": None}
    out = scrub_data(data, [KEY, TOKEN])
    assert KEY not in json.dumps(out) and hex_form not in json.dumps(out)
    assert out["n"] == 1.5 and out["none"] is None and out[MASK] == 3


def test_secrets_from_env_takes_every_configured_secret() -> None:
    env = {
        "LLM_API_KEY": KEY, "GIT_TOKEN": TOKEN, "AGENTSWARM_DASHBOARD_TOKEN": "dash-token-123456",
        "MODAL_TOKEN_ID": "ak-modal-id-0001", "MODAL_TOKEN_SECRET": "as-modal-secret-0002",
        "DATABASE_URL": "postgresql+psycopg://swarm:db%2Fpass-word-1@db.example:5432/swarm",
        "REDIS_URL": "redis://127.0.0.1:6379/0",  # no password: nothing secret in it
        "OTHER": "not-a-secret-value",
    }
    found = secrets_from_env(env)
    for value in (KEY, TOKEN, "dash-token-123456", "ak-modal-id-0001", "as-modal-secret-0002",
                  env["DATABASE_URL"], "db%2Fpass-word-1", "db/pass-word-1"):
        assert value in found
    assert "not-a-secret-value" not in found and env["REDIS_URL"] not in found
    assert secrets_from_env({"LLM_API_KEY": "short"}) == []
    out = scrub(f"connect failed: {env['DATABASE_URL']} pw=db/pass-word-1", found)
    assert "pass-word" not in out


def test_nul_and_lone_surrogates_are_cleaned() -> None:
    assert clean_text("a\x00b") == "ab"
    assert clean_text("lone \ud800 half") == "lone \ufffd half"
    assert clean_text("pair \ud83d\ude00") == "pair \U0001f600"  # a well-formed pair becomes its character
    cleaned = clean_data({"k\x00": ["x\x00", "\udfff"], "n": 1})
    assert cleaned == {"k": ["x", "\ufffd"], "n": 1}
    for value in ("a\x00b", "lone \ud800 half"):
        clean_text(value).encode("utf-8")  # what psycopg does: no error


@pytest.mark.parametrize("hide", ["\x00", "\x1b[0m", "\x1b[31;1m", "\u200b", "\ufeff", "\u00ad", "\x07", "\b",
                                  "\\u0000", "\\u001b[0m", "\\u200b", "\\x00"])
def test_a_secret_split_by_hidden_characters_is_found(hide: str) -> None:
    split = KEY[:7] + hide + KEY[7:15] + hide + hide + KEY[15:]
    out = scrub(f"before {split} after", [KEY])
    assert out == f"before {MASK} after", repr(out)
    assert scrub_clip(f"x {split}", [KEY]) == f"x {MASK}"


def test_a_secret_after_an_escape_sequence_is_still_found() -> None:
    # An escape that would swallow the secret's first characters in the cleaned copy: the raw pass finds it.
    hexed = TOKEN.encode().hex()
    out = scrub(f"\x1b[{hexed} and \x1b[{KEY}", [KEY, TOKEN])
    assert hexed[4:] not in out and KEY[2:] not in out


def test_base64_wrapped_across_lines_is_found() -> None:
    blob = base64.b64encode(b"some leading bytes " + KEY.encode() + b" and trailing ones, long enough").decode()
    for wrap in (4, 16, 76):
        wrapped = "\n".join(blob[i:i + wrap] for i in range(0, len(blob), wrap))
        for text in (wrapped, wrapped.replace("\n", "\r\n"), json.dumps(wrapped)):  # raw, CRLF, JSON-escaped
            out = scrub(f"cert:\n{text}\nend", [KEY])
            flat = out.replace("\\n", "").replace("\\r", "").replace("\n", "").replace("\r", "")
            assert MASK in out, (wrap, text)
            assert_gone(flat, base64.b64encode(KEY.encode()).decode()[4:-4], 10)


@pytest.mark.parametrize("sep", [" ", "-", ":", "\n", "  "])
@pytest.mark.parametrize("group", [2, 4, 8])
def test_grouped_hex_is_found(sep: str, group: int) -> None:
    hexed = KEY.encode().hex()
    for form in (hexed, hexed.upper()):
        grouped = sep.join(form[i:i + group] for i in range(0, len(form), group))
        out = scrub(f"dump: {grouped} end", [KEY])
        assert out == f"dump: {MASK} end", (sep, group, out)


def test_the_loose_pass_keeps_ordinary_text() -> None:
    text = "ab12 cd34 ef56 -- a: b: c\n" + base64.b64encode(b"nothing secret in here at all").decode()
    assert scrub(text, [KEY, TOKEN]) == text
