"""The one secret scrubber, and the cleaning of text before it is stored. Standard library only.

It runs inside the sandbox (the runner scrubs result.json and the transcript) and in the
orchestrator (handoffs, LLM-call errors, events and task fields are scrubbed before they are
stored). A secret is blanked in every form a tool or a model is likely to print it in:

- plain, and as it appears inside a JSON string;
- base64, standard and URL-safe, at each of the three alignments a secret can take inside a
  longer base64 stream (only the characters that depend on the secret alone are matched);
- hex (either case);
- percent-encoded (quote / quote_plus / every byte escaped, either case of the hex digits).

Cleaned first, then matched: the forms are looked for in a copy of the text without what hides a
secret from a plain search but not from a reader (NUL and other control characters, ANSI escape
sequences, zero-width characters, and their JSON/Python escapes such as \\u0000), and again in a copy
without whitespace and the separators `-` and `:` as well (base64 wrapped across lines, hex grouped
as "ab12 cd34" or "ab:12:cd"). A match blanks the whole span of the original text it came from.

Secrets shorter than MIN_SECRET_LEN are ignored so that nothing common is blanked. Always scrub
BEFORE cutting a text to a length: a secret split by a cut cannot be found any more (`scrub_clip`).
"""

from __future__ import annotations

import base64
import bisect
import codecs
import functools
import json
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

MIN_SECRET_LEN = 8
MASK = "***"
# Every environment variable that may hold a secret, in the sandbox or in the orchestrator.
SECRET_ENV_NAMES = (
    "LLM_API_KEY", "GIT_TOKEN", "DATABASE_URL", "REDIS_URL", "AGENTSWARM_DASHBOARD_TOKEN",
    "MODAL_TOKEN_SECRET", "MODAL_TOKEN_ID", "HUB_SERVE_TOKEN", "GATE_HUB_TOKEN",
)
URL_ENV_NAMES = ("DATABASE_URL", "REDIS_URL")
_SURROGATE = re.compile("[\ud800-\udfff]")
# What a reader (a terminal, a JSON decoder) does not show: ANSI sequences (raw or JSON/Python-escaped),
# control and zero-width characters, and the escapes of those.
_ESC = r"(?:\x1b|\\(?:u001[bB]|x1[bB]|033|e))"
_HIDDEN = (
    rf"{_ESC}(?:\[[0-?]{{0,16}}[ -/]{{0,4}}[@-~]|[@-_])?"  # CSI (colours, cursor moves; bounded) or another escape
    r"|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u00ad\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]"
    r"|\\(?:u00[01][0-9a-fA-F]|u007[fF]|u00[aA][dD]|u200[b-fB-F]|u202[8-9a-eA-E]|u206[0-4]|u[fF][eE][fF][fF]"
    r"|x[01][0-9a-fA-F]|x7[fF]|0(?![0-9]))"
)
_SKIPPED = re.compile(_HIDDEN)
# ... and, for the second pass, whitespace (raw or escaped) and the separators of grouped encodings.
_SKIPPED_LOOSE = re.compile(rf"(?:[\s:-]|\\[nrtvf]|{_HIDDEN})+")


def url_secrets(url: str | None) -> list[str]:
    """The secret parts of a service URL: its password (raw and decoded) and the whole URL when it has one."""
    url = (url or "").strip()
    if not url:
        return []
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return [url]
    if not password:
        return []  # no credentials in it: nothing to hide (and a plain URL is common text)
    return [url, password, unquote(password)]


def secret_values(plain: Iterable[str | None] = (), urls: Iterable[str | None] = ()) -> list[str]:
    """The distinct secrets (stripped, at least MIN_SECRET_LEN long) from plain values and service URLs."""
    found: list[str] = []
    candidates = [p for p in plain] + [s for u in urls for s in url_secrets(u)]
    for value in candidates:
        value = (value or "").strip()
        if len(value) >= MIN_SECRET_LEN and value not in found:
            found.append(value)
    return found


def secrets_from_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """The secret values present in an environment (this process's by default)."""
    env = os.environ if environ is None else environ
    return secret_values([env.get(n) for n in SECRET_ENV_NAMES if n not in URL_ENV_NAMES],
                         [env.get(n) for n in URL_ENV_NAMES])


def base64_cores(data: bytes) -> list[str]:
    """The base64 text `data` yields at stream offsets 0, 1 and 2, keeping only the characters it alone decides.

    Inside a longer stream the secret starts at some byte offset; modulo 3 there are three cases.
    Encoding k filler bytes plus the secret, the characters from ceil(8k/6) up to floor(8(k+n)/6)
    depend on the secret's bits only, whatever surrounds it.
    """
    cores = []
    for k in range(3):
        encoded = base64.b64encode(b"\0" * k + data).decode("ascii")
        start, end = -(-8 * k // 6), 8 * (k + len(data)) // 6
        cores.append(encoded[start:end])
    return cores


def secret_forms(secret: str) -> tuple[set[str], set[str]]:
    """(forms matched exactly, forms matched ignoring case) of one secret."""
    exact = {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    data = secret.encode("utf-8", "surrogatepass")
    for core in base64_cores(data):
        exact.add(core)
        exact.add(core.replace("+", "-").replace("/", "_"))
    every_byte = "".join(f"%{b:02x}" for b in data)  # some encoders escape every byte
    folded = {data.hex(), quote(secret, safe=""), quote(secret), quote_plus(secret), every_byte}
    folded = {f for f in folded if f != secret}
    return {f for f in exact if len(f) >= MIN_SECRET_LEN}, {f for f in folded if len(f) >= MIN_SECRET_LEN}


def _loose(form: str) -> str:
    return _SKIPPED_LOOSE.sub("", form)


@functools.lru_cache(maxsize=32)
def _patterns(secrets: tuple[str, ...]) -> tuple[re.Pattern[str] | None, re.Pattern[str] | None]:
    """(the forms, the forms without whitespace and separators) as two regexes."""
    exact: set[str] = set()
    folded: set[str] = set()
    for secret in secrets:
        e, f = secret_forms(secret)
        exact |= e
        folded |= f
    loose_exact = {x for x in map(_loose, exact) if len(x) >= MIN_SECRET_LEN}
    loose_folded = {x for x in map(_loose, folded) if len(x) >= MIN_SECRET_LEN}
    return _alternatives(exact, folded), _alternatives(loose_exact, loose_folded)


def _alternatives(exact: set[str], folded: set[str]) -> re.Pattern[str] | None:
    alternatives = [re.escape(s) for s in sorted(exact, key=len, reverse=True)]
    alternatives += [f"(?i:{re.escape(s)})" for s in sorted(folded, key=len, reverse=True)]
    return re.compile("|".join(alternatives)) if alternatives else None


def _usable(secrets: Iterable[str | None]) -> tuple[str, ...]:
    return tuple(sorted({s.strip() for s in secrets if s and len(s.strip()) >= MIN_SECRET_LEN}, key=len, reverse=True))


def _spans_in_view(text: str, skipped: re.Pattern[str], pattern: re.Pattern[str]) -> list[tuple[int, int]]:
    """Spans of `text` whose characters, once `skipped` is taken out, match `pattern`."""
    if pattern.search(skipped.sub("", text)) is None:  # the common case, at C speed: nothing to map back
        return []
    view: list[str] = []
    view_at: list[int] = []  # where each kept piece starts in the view ...
    text_at: list[int] = []  # ... and in the text
    pos = length = 0
    for m in skipped.finditer(text):
        if m.start() > pos:
            view.append(text[pos:m.start()])
            view_at.append(length)
            text_at.append(pos)
            length += m.start() - pos
        pos = m.end()
    if pos == 0 and not view:
        return [m.span() for m in pattern.finditer(text)]
    if pos < len(text):
        view.append(text[pos:])
        view_at.append(length)
        text_at.append(pos)

    def where(i: int) -> int:
        k = bisect.bisect_right(view_at, i) - 1
        return text_at[k] + i - view_at[k]

    return [(where(m.start()), where(m.end() - 1) + 1) for m in pattern.finditer("".join(view)) if m.end() > m.start()]


def _blank(text: str, spans: list[tuple[int, int]]) -> str:
    """`text` with each (merged) span replaced by MASK."""
    out: list[str] = []
    pos = 0
    for a, b in sorted(spans):
        if b <= pos:
            continue
        a = max(a, pos)
        out.append(text[pos:a])
        out.append(MASK)
        pos = b
    out.append(text[pos:])
    return "".join(out)


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with every form of every secret (of at least MIN_SECRET_LEN characters) replaced by ***.

    A form is found as it stands, with hidden characters between its characters, and (when long enough)
    with whitespace and separators between them too; the whole span it covers is blanked.
    """
    if not text:
        return text
    plain, loose = _patterns(_usable(secrets))
    if plain is None:
        return text
    # Repeat until stable: blanking one form can join the pieces of another around it.
    for _ in range(3):
        spans = [m.span() for m in plain.finditer(text)]
        if _SKIPPED.search(text):  # without hidden characters that view is the text itself
            spans += _spans_in_view(text, _SKIPPED, plain)
        if loose is not None:
            spans += _spans_in_view(text, _SKIPPED_LOOSE, loose)
        if not spans:
            break
        text = _blank(text, spans)
    return text


class StreamScrub:
    """Scrubs a byte stream piece by piece: it holds back enough of the tail that no secret is cut between pieces.

    feed() returns what may be sent now; finish() the rest. A secret spread over more than the held-back
    characters (hidden characters or whitespace between its own) is the limit of what it finds.
    """

    def __init__(self, secrets: Iterable[str | None], hold_chars: int | None = None) -> None:
        self.secrets = _usable(secrets)
        longest = max((len(f) for s in self.secrets for forms in secret_forms(s) for f in forms), default=0)
        self.hold = hold_chars if hold_chars is not None else 8 * longest + 256
        self._decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self._held = ""

    def feed(self, data: bytes) -> bytes:
        """The scrubbed text that can go out now."""
        text = scrub(self._held + self._decoder.decode(data), self.secrets)
        cut = max(0, len(text) - self.hold)
        self._held = text[cut:]
        return text[:cut].encode("utf-8", "surrogateescape")

    def finish(self) -> bytes:
        """The rest, scrubbed."""
        text = scrub(self._held + self._decoder.decode(b"", final=True), self.secrets)
        self._held = ""
        return text.encode("utf-8", "surrogateescape")


def scrub_data(value: Any, secrets: Iterable[str | None]) -> Any:
    """A copy of JSON-like data (dicts, lists, strings) with every string scrubbed (keys too)."""
    usable = _usable(secrets)
    if not usable:
        return value
    return _walk(value, lambda s: scrub(s, usable))


def clean_text(text: str) -> str:
    """Text Postgres accepts: NUL characters dropped, lone surrogates replaced by U+FFFD."""
    if not text:
        return text
    if "\x00" in text:
        text = text.replace("\x00", "")
    if _SURROGATE.search(text):
        # surrogatepass keeps well-formed pairs (joined back into one character); lone halves become U+FFFD.
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def clean_data(value: Any) -> Any:
    """A copy of JSON-like data with every string (keys too) passed through `clean_text`."""
    return _walk(value, clean_text)


def clip(text: str, limit: int) -> str:
    """The first `limit` characters of `text` (a marker says how many were cut)."""
    if len(text) <= limit:
        return text
    marker = f"... [{len(text) - limit} more chars]"
    return text[: max(0, limit - len(marker))] + marker if limit > len(marker) else text[:limit]


def scrub_clip(text: str | None, secrets: Iterable[str | None], limit: int | None = None) -> str | None:
    """Scrub, clean, and only then cut to `limit` characters (None: no cut). None stays None."""
    if text is None:
        return None
    text = clean_text(scrub(str(text), secrets))
    return text if limit is None else clip(text, limit)


def _walk(value: Any, fix: Any) -> Any:
    if isinstance(value, str):
        return fix(value)
    if isinstance(value, dict):
        return {(fix(k) if isinstance(k, str) else k): _walk(v, fix) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_walk(v, fix) for v in value]
    return value
