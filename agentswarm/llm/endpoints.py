"""LLM_ENDPOINTS: the model endpoints a swarm may call, in order of preference, read from settings.

A list of endpoints, each with a name, a base URL, the name of the environment variable holding its
key (never the key itself: it is read at call time), a model, how many requests it takes at once, its
prices (per token, or per GPU-hour with the number of GPUs) and the roles it serves. Given as JSON in
LLM_ENDPOINTS or as TOML (`[[endpoints]]` tables) in the file LLM_ENDPOINTS_FILE. Without either,
LLM_BASE_URL is a one-endpoint list named `default`. A bad entry is one line naming the field.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agentswarm.llm import normalize_base_url


class Settings(Protocol):
    """The settings endpoints are read from (agentswarm.config.Settings; a protocol here, so no import circle)."""

    llm_endpoints: str
    llm_endpoints_file: Path | None
    llm_base_url: str
    llm_api_key: str
    llm_model: str
    llm_timeout_s: float
    llm_price_in_per_mtok: float
    llm_price_out_per_mtok: float
    llm_gpu_price_per_hour: float

ROLES = ("planner", "worker", "reconciler")
ROLE_OF = {"subplanner": "planner"}  # a subplanner call goes where planner calls go
LEGACY_NAME = "default"
LEGACY_KEY_ENV = "LLM_API_KEY"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


class EndpointError(ValueError):
    """A bad LLM_ENDPOINTS entry; the message is one line naming the field."""


@dataclass(frozen=True)
class Endpoint:
    """One OpenAI-compatible endpoint. Prices: tokens, or GPU-hours (then the token prices are ignored)."""

    name: str
    base_url: str  # normalized: no trailing / or /v1
    key_env: str = ""  # the environment variable holding the key ('' for none); the key is never stored here
    model: str = "glm-5"
    max_concurrency: int = 8  # requests in flight at once, across every process of the swarm
    roles: tuple[str, ...] = ROLES
    price_in_per_mtok: float = 0.0  # dollars per million prompt tokens
    price_out_per_mtok: float = 0.0  # dollars per million completion tokens
    gpu_price_per_hour: float = 0.0  # dollars per GPU-hour: charged by wall-clock time in use, not per call
    gpus: int = 1
    timeout_s: float | None = None  # a warm call's limit; None: LLM_TIMEOUT_S
    cold_start_s: float = 0.0  # a cold endpoint's first call may take this long (serverless queues); 0: never cold
    warm_for_s: float = 300.0  # idle this long after its last answer, the endpoint is cold again
    backoff_s: float = 10.0  # a failed endpoint's circuit stays open this long (doubling on each failed probe)

    @property
    def state_key(self) -> str:
        """Its name in the shared routing state: the name and a digest of where it points, so two swarms (or
        tests) that share a Redis and an endpoint name but not the server never share its slots or circuit."""
        digest = hashlib.sha1(f"{self.base_url} {self.model}".encode()).hexdigest()[:10]
        return f"{self.name}@{digest}"

    @property
    def gpu_priced(self) -> bool:
        """Charged by GPU time rather than by tokens."""
        return self.gpu_price_per_hour > 0

    @property
    def prices(self) -> dict[str, float]:
        """The prices, as shown by `doctor` and the dashboard."""
        if self.gpu_priced:
            return {"gpu_price_per_hour": self.gpu_price_per_hour, "gpus": float(self.gpus)}
        return {"price_in_per_mtok": self.price_in_per_mtok, "price_out_per_mtok": self.price_out_per_mtok}

    def serves(self, role: str) -> bool:
        """True when calls of `role` (planner, subplanner, worker, reconciler) may go here."""
        return ROLE_OF.get(role, role) in self.roles

    def key(self, settings: Settings | None = None) -> str | None:
        """The key, read now from the variable it names (LLM_API_KEY also from .env through settings)."""
        if not self.key_env:
            return None
        value = os.environ.get(self.key_env, "")
        if not value and self.key_env == LEGACY_KEY_ENV and settings is not None:
            value = settings.llm_api_key
        return value.strip() or None

    def public(self) -> dict[str, Any]:
        """What may be shown or stored: everything but a key (which this object never holds anyway)."""
        return {"name": self.name, "base_url": self.base_url, "key_env": self.key_env, "model": self.model,
                "max_concurrency": self.max_concurrency, "roles": list(self.roles), **self.prices}


_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str, "base_url": str, "key_env": str, "model": str, "max_concurrency": int, "roles": list,
    "price_in_per_mtok": (int, float), "price_out_per_mtok": (int, float), "gpu_price_per_hour": (int, float),
    "gpus": int, "timeout_s": (int, float), "cold_start_s": (int, float), "warm_for_s": (int, float),
    "backoff_s": (int, float),
}
_POSITIVE = {"max_concurrency", "gpus", "timeout_s", "warm_for_s", "backoff_s"}


def _entry(raw: Any, where: str, default_model: str) -> Endpoint:
    if not isinstance(raw, dict):
        raise EndpointError(f"{where}: must be a table/object with name, base_url, ...; got {type(raw).__name__}")
    label = f"{where} ({raw['name']!r})" if isinstance(raw.get("name"), str) else where
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise EndpointError(f"{label}.{unknown[0]}: unknown key; known: {', '.join(_FIELDS)}")
    for required in ("name", "base_url"):
        if required not in raw:
            raise EndpointError(f"{label}.{required}: missing")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        kind = _FIELDS[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            expected = "a number" if kind == (int, float) else {str: "a string", int: "an integer",
                                                                   list: "a list"}[kind]  # type: ignore[index]
            raise EndpointError(f"{label}.{key}: must be {expected} (got {value!r})")
        if isinstance(value, int | float) and not isinstance(value, bool):
            if value != value or value in (float("inf"), float("-inf")) or value < 0 or (
                    key in _POSITIVE and value == 0):
                raise EndpointError(f"{label}.{key}: must be {'> 0' if key in _POSITIVE else '>= 0'} (got {value!r})")
        values[key] = value
    if not _NAME.match(values["name"]):
        raise EndpointError(f"{label}.name: letters, digits, '_', '.', '-' (at most 64) (got {values['name']!r})")
    try:
        values["base_url"] = normalize_base_url(values["base_url"])
    except ValueError as exc:
        raise EndpointError(f"{label}.base_url: {exc}") from None
    if values.get("key_env") and not _ENV_NAME.match(values["key_env"]):
        raise EndpointError(f"{label}.key_env: the NAME of an environment variable, not a key "
                            "(letters, digits and '_')")
    if "model" in values and not values["model"].strip():
        raise EndpointError(f"{label}.model: must not be empty")
    if "roles" in values:
        roles = values["roles"]
        bad = [r for r in roles if not isinstance(r, str) or ROLE_OF.get(r, r) not in ROLES]
        if bad or not roles:
            raise EndpointError(f"{label}.roles: a non-empty list of {', '.join(ROLES)} (got {roles!r})")
        values["roles"] = tuple(dict.fromkeys(ROLE_OF.get(r, r) for r in roles))
    values.setdefault("model", default_model)
    return Endpoint(**values)


def parse_endpoints(entries: Any, *, source: str = "LLM_ENDPOINTS", default_model: str = "glm-5") -> list[Endpoint]:
    """Endpoints from decoded JSON/TOML: a list of entries, or a table whose `endpoints` key holds them."""
    if isinstance(entries, dict):
        extra = sorted(set(entries) - {"endpoints"})
        if extra:
            raise EndpointError(f"{source}.{extra[0]}: unknown key; the file holds [[endpoints]] tables")
        entries = entries.get("endpoints")
    if not isinstance(entries, list) or not entries:
        raise EndpointError(f"{source}: must be a non-empty list of endpoints")
    endpoints = [_entry(raw, f"{source}[{i}]", default_model) for i, raw in enumerate(entries)]
    seen: set[str] = set()
    for ep in endpoints:
        if ep.name in seen:
            raise EndpointError(f"{source}: endpoint name {ep.name!r} appears twice")
        seen.add(ep.name)
    return endpoints


def parse_json(text: str, *, default_model: str = "glm-5") -> list[Endpoint]:
    """LLM_ENDPOINTS given as JSON."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EndpointError(f"LLM_ENDPOINTS: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    return parse_endpoints(data, default_model=default_model)


def parse_toml_file(path: Path, *, default_model: str = "glm-5") -> list[Endpoint]:
    """LLM_ENDPOINTS_FILE: a TOML file of [[endpoints]] tables."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise EndpointError(f"LLM_ENDPOINTS_FILE: cannot read {str(path)!r} ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise EndpointError(f"LLM_ENDPOINTS_FILE: {str(path)!r} is not valid TOML ({exc})") from None
    return parse_endpoints(data, source=f"LLM_ENDPOINTS_FILE {Path(path).name}", default_model=default_model)


def legacy_endpoint(settings: Settings) -> Endpoint:
    """LLM_BASE_URL (with LLM_API_KEY, LLM_MODEL and the LLM_PRICE settings) as a one-endpoint list."""
    return Endpoint(
        name=LEGACY_NAME, base_url=settings.llm_base_url, key_env=LEGACY_KEY_ENV, model=settings.llm_model,
        max_concurrency=1000, price_in_per_mtok=settings.llm_price_in_per_mtok,
        price_out_per_mtok=settings.llm_price_out_per_mtok, gpu_price_per_hour=settings.llm_gpu_price_per_hour,
        timeout_s=settings.llm_timeout_s, backoff_s=1.0,  # one endpoint: retried soon, as the client did alone
    )


def load_endpoints(settings: Settings) -> list[Endpoint]:
    """The endpoints of this swarm, in order of preference ([] in demo mode with no endpoint at all)."""
    if settings.llm_endpoints.strip():
        return parse_json(settings.llm_endpoints, default_model=settings.llm_model)
    if settings.llm_endpoints_file is not None:
        return parse_toml_file(settings.llm_endpoints_file, default_model=settings.llm_model)
    return [legacy_endpoint(settings)] if settings.llm_base_url else []


def for_role(endpoints: list[Endpoint], role: str) -> list[Endpoint]:
    """The endpoints serving `role`, in order of preference."""
    return [ep for ep in endpoints if ep.serves(role)]
