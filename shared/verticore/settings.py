"""Every ``VERTICORE_*`` environment variable, in one typed ``pydantic-settings`` class.

Read them with :func:`get_settings` (never ``os.environ`` directly)::

    from verticore.settings import get_settings

    if get_settings().demo_fast:
        ...

:func:`get_settings` re-reads the environment on each call (tests and the CLI change variables at
run time); the parsed object is cached per distinct set of ``VERTICORE_*`` values, so a call costs
one scan of ``os.environ``. An empty variable counts as unset. Booleans accept ``1/true/yes/on``
and ``0/false/no/off`` (any case) and nothing else. A bad value raises :class:`SettingsError` with
a one-line message naming the variable, e.g. ``VERTICORE_PORT must be an integer from 1 to 65535,
got 'eighty'``.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import VerticoreError

ENV_PREFIX = "VERTICORE_"
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


class SettingsError(VerticoreError):
    """A ``VERTICORE_*`` environment variable has a value that cannot be used."""


def parse_bool(value: Any, *, extra_true: frozenset[str] = frozenset()) -> bool:
    """``1/true/yes/on`` -> True, ``0/false/no/off`` -> False (any case, surrounding blanks ignored)."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in TRUE_WORDS or word in extra_true:
        return True
    if word in FALSE_WORDS:
        return False
    accepted = "/".join(sorted(TRUE_WORDS | extra_true)) + " or " + "/".join(sorted(FALSE_WORDS))
    raise ValueError(f"must be one of {accepted}")


def _login_flag(value: Any) -> bool:
    # the documented spelling is VERTICORE_DASHBOARD_LOGIN=required
    return parse_bool(value, extra_true=frozenset({"required"}))


def _int_between(low: int, high: int | None) -> BeforeValidator:
    def check(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError("must be an integer")
        try:
            number = int(str(value).strip()) if not isinstance(value, int) else value
        except ValueError:
            number = None
        if number is None or number < low or (high is not None and number > high):
            raise ValueError(f"must be an integer from {low} to {high}" if high is not None
                             else f"must be an integer >= {low}")
        return number

    return BeforeValidator(check)


def _path(value: Any) -> Any:
    return Path(str(value).strip()).expanduser() if isinstance(value, (str, Path)) else value


Bool = Annotated[bool, BeforeValidator(parse_bool)]
LoginFlag = Annotated[bool, BeforeValidator(_login_flag)]
UserPath = Annotated[Path, BeforeValidator(_path)]


def _default_cache() -> Path:
    return Path.home() / ".cache" / "verticore"


class VerticoreSettings(BaseSettings):
    """The ``VERTICORE_*`` environment variables (field ``x`` is ``VERTICORE_X``)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_ignore_empty=True, extra="ignore",
                                      validate_default=False, frozen=True)

    home: UserPath | None = Field(
        default=None, description="Demo state: trained models, indexes, databases, keys, registry "
                                  "(default <repo>/.verticore in a checkout, else ~/.verticore).")
    cache: UserPath = Field(default_factory=_default_cache,
                            description="Cache of exported ONNX models and bench artefacts.")
    data: UserPath | None = Field(
        default=None, description="Shared data sets read by the benches (default ../shared/data beside the checkout).")
    num_threads: Annotated[int | None, _int_between(1, None)] = Field(
        default=None, description="ONNX Runtime intra-op threads (default: physical cores available).")
    ort_spin: Bool = Field(default=False, description="Let ONNX Runtime threads spin-wait (latency over CPU use).")
    demo_fast: Bool = Field(default=False, description="Tiny demo training (a few steps): tests and CI.")
    port: Annotated[int, _int_between(1, 65535)] = Field(default=8501, description="Port of `make demo`'s hub.")
    host: str = Field(default="127.0.0.1", description="Address `make demo` serves on (off loopback asks for a login).")
    mlflow: Bool = Field(default=True, description="Log registry events to MLflow when it is installed.")
    webhook_allow: str = Field(
        default="", description="Operator allow-list for webhooks and feed URLs on private addresses "
                                "(comma-separated hosts, IPs, CIDRs).")
    dashboard_users: UserPath | None = Field(
        default=None, description="Dashboard users file (default $VERTICORE_HOME/dashboard_users.yaml).")
    dashboard_login: LoginFlag = Field(default=False,
                                       description="`required`: ask for a login even on loopback.")
    cs_key: SecretStr | None = Field(
        default=None, description="Fernet key encrypting the support bot's session state "
                                  "(default: a bot.key file next to its database).")


def env_name(field: str) -> str:
    """The environment variable behind settings field ``field`` (``demo_fast`` -> ``VERTICORE_DEMO_FAST``)."""
    return ENV_PREFIX + field.upper()


def _one_line(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err.get("loc") else "?"
        msg = str(err.get("msg", "is invalid")).removeprefix("Value error, ")
        shown = "" if field == "cs_key" else f", got {err.get('input')!r}"  # never echo a secret
        parts.append(f"{env_name(field)} {msg}{shown}")
    return "; ".join(parts)


@lru_cache(maxsize=16)
def _load(snapshot: tuple[tuple[str, str], ...]) -> VerticoreSettings:
    del snapshot  # only the cache key: the class reads os.environ itself
    try:
        return VerticoreSettings()
    except ValidationError as exc:
        raise SettingsError(_one_line(exc)) from None


def get_settings() -> VerticoreSettings:
    """The current ``VERTICORE_*`` settings (re-read from the environment; raises :class:`SettingsError`)."""
    snapshot = tuple(sorted((k, v) for k, v in os.environ.items() if k.upper().startswith(ENV_PREFIX)))
    return _load(snapshot)


def reload() -> VerticoreSettings:
    """Drop cached settings and parse the environment again."""
    _load.cache_clear()
    return get_settings()


def describe() -> list[tuple[str, str, str]]:
    """``(variable, default, description)`` for every setting (README table, ``--help`` texts)."""
    rows = []
    for name, info in VerticoreSettings.model_fields.items():
        default = info.get_default(call_default_factory=True)
        shown = "" if default is None else str(default).lower() if isinstance(default, bool) else str(default)
        rows.append((env_name(name), shown, info.description or ""))
    return rows


__all__ = ["ENV_PREFIX", "SettingsError", "VerticoreSettings", "describe", "env_name", "get_settings",
           "parse_bool", "reload"]
