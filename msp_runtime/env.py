"""Reading configuration from the environment, the way MSP's ``contract.Env`` does.

Every variable a service reads goes through one :class:`Env`. Getters never raise:
each problem is recorded with the variable it concerns, and :meth:`Env.validate`
raises one :class:`ConfigError` that lists them all. Like upstream, a variable that is
*present* wins over the default even when it is empty, so ``PORT=`` is an error rather
than a silent fallback.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, cast

__all__ = [
    "ConfigError",
    "Env",
    "EnvError",
    "RequestedVariable",
    "load_config",
    "parse_go_duration",
]

T = TypeVar("T")
ConfigT = TypeVar("ConfigT")

_REDACTED = "<redacted>"
_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:inf|infinity|nan)", re.I)


class EnvError(Exception):
    """One problem with one environment variable."""

    def __init__(self, variable: str, message: str, description: str = "") -> None:
        self.variable = variable
        self.message = message
        self.description = description
        super().__init__(str(self))

    def __str__(self) -> str:
        suffix = f" (description: {self.description})" if self.description else ""
        return f"{self.variable}: {self.message}{suffix}"


class ConfigError(Exception):
    """Every configuration problem found, reported together."""

    def __init__(self, errors: Iterable[EnvError]) -> None:
        self.errors: tuple[EnvError, ...] = tuple(errors)
        super().__init__(str(self))

    @property
    def variables(self) -> list[str]:
        """The variables named by the errors, in the order they were found."""
        return [e.variable for e in self.errors]

    def __str__(self) -> str:
        n = len(self.errors)
        lines = [f"{n} configuration problem{'s' if n != 1 else ''}:"]
        lines += [f"  - {e}" for e in self.errors]
        return "\n".join(lines)


@dataclass(frozen=True)
class RequestedVariable:
    """A variable the service read, for ``--help``."""

    name: str
    description: str
    default: str | None
    required: bool
    secret: bool = False

    def render(self) -> str:
        if self.required:
            note = "required"
        elif self.default is None:
            note = "optional"
        else:
            note = f"default: {self.default!r}"
        return f"- '{self.name}': {self.description} ({note})"


def parse_go_duration(value: str) -> timedelta:
    """Parse a Go ``time.ParseDuration`` string such as ``600s``, ``1h30m`` or ``-1.5h``."""
    s = value
    sign = 1
    if s[:1] in "+-" and s:
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return timedelta(0)
    if not s:
        raise ValueError(f"invalid duration {value!r}")
    total_ns = 0.0
    for number, unit in _iter_duration_parts(s, value):
        total_ns += float(number) * _DURATION_UNITS[unit]
    return timedelta(microseconds=sign * math.floor(total_ns / 1000))


_DURATION_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_DURATION_PART = re.compile(r"([0-9]*\.?[0-9]*)([a-zµμ]*)")


def _iter_duration_parts(s: str, original: str) -> Iterable[tuple[str, str]]:
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        assert m is not None  # the pattern matches the empty string
        number, unit = m.groups()
        if not number or number == "." or m.end() == pos:
            raise ValueError(f"invalid duration {original!r}")
        if not unit:
            raise ValueError(f"missing unit in duration {original!r}")
        if unit not in _DURATION_UNITS:
            raise ValueError(f"unknown unit {unit!r} in duration {original!r}")
        yield number, unit
        pos = m.end()


class Env:
    """Typed, error-collecting access to environment variables.

    Getters record each variable (for ``--help``) and each problem (for
    :meth:`validate`); they return a zero value when the variable is bad.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ: dict[str, str] = dict(os.environ if environ is None else environ)
        self._errors: list[EnvError] = []
        self._requested: dict[str, RequestedVariable] = {}
        self._validated = False

    # -- raw access -------------------------------------------------------------------

    def _lookup(
        self,
        name: str,
        default: str | None,
        description: str,
        *,
        required: bool,
        secret: bool,
    ) -> str | None:
        if self._validated:
            raise RuntimeError(f"Env used to read {name} after validate() was called")
        if name not in self._requested:
            self._requested[name] = RequestedVariable(name, description, default, required, secret)
        return self._environ.get(name, default)

    def _fail(self, name: str, message: str) -> None:
        if any(e.variable == name and e.message == message for e in self._errors):
            return  # a variable read twice (MSP, say) is reported once
        description = self._requested[name].description if name in self._requested else ""
        self._errors.append(EnvError(name, message, description))

    def _show(self, name: str, value: str) -> str:
        return _REDACTED if self._requested[name].secret else repr(value)

    def add_error(self, variable: str, message: str) -> None:
        """Record a problem found by the caller, for instance in a config loader."""
        self._fail(variable, message)

    def is_set(self, name: str) -> bool:
        """Whether ``name`` is present in the environment (even if empty)."""
        return name in self._environ

    # -- getters ----------------------------------------------------------------------

    def get(self, name: str, default: str | None, description: str, *, secret: bool = False) -> str:
        """A non-empty string. ``default=None`` makes the variable required."""
        value = self._lookup(name, default, description, required=default is None, secret=secret)
        if value is None:
            self._fail(name, "required but not set")
            return ""
        if value == "":
            self._fail(name, "set to an empty value; a value is required")
        return value

    def get_optional(self, name: str, description: str, *, secret: bool = False) -> str | None:
        """The value, or ``None`` when absent. An empty value is returned as ``""``."""
        return self._lookup(name, None, description, required=False, secret=secret)

    def _parse(
        self,
        name: str,
        default: object | None,
        description: str,
        kind: str,
        parse: Callable[[str], T],
        zero: T,
        secret: bool = False,
    ) -> T:
        raw_default = None if default is None else _format_default(default)
        value = self._lookup(name, raw_default, description, required=default is None, secret=secret)
        if value is None:
            self._fail(name, "required but not set")
            return zero
        try:
            return parse(value)
        except ValueError as exc:
            self._fail(name, f"invalid {kind} {self._show(name, value)}: {exc}")
            return zero

    def get_int(self, name: str, default: int | None, description: str) -> int:
        """A base-10 integer (``strconv.ParseInt`` rules: optional sign, digits only)."""
        return self._parse(name, default, description, "int", _parse_int, 0)

    def get_float(self, name: str, default: float | None, description: str) -> float:
        """A floating-point number."""
        return self._parse(name, default, description, "float", _parse_float, 0.0)

    def get_bool(self, name: str, default: bool | None, description: str) -> bool:
        """A boolean with Go's ``strconv.ParseBool`` spellings (``1 t true TRUE 0 f false`` …)."""
        return self._parse(name, default, description, "bool", _parse_bool, False)

    def get_percent(self, name: str, default: int | None, description: str) -> int:
        """An integer from 0 to 100."""
        return self._parse(name, default, description, "percent", _parse_percent, 0)

    def get_duration(self, name: str, default: timedelta | str | None, description: str) -> timedelta:
        """A Go duration string such as ``300ms``, ``10s`` or ``2h45m``."""
        return self._parse(name, default, description, "duration", parse_go_duration, timedelta(0))

    def get_optional_duration(self, name: str, description: str) -> timedelta | None:
        """A Go duration, or ``None`` when absent."""
        value = self.get_optional(name, description)
        if value is None:
            return None
        try:
            return parse_go_duration(value)
        except ValueError as exc:
            self._fail(name, f"invalid duration {value!r}: {exc}")
            return None

    # -- lifecycle --------------------------------------------------------------------

    @property
    def requested(self) -> list[RequestedVariable]:
        """Every variable read so far, in the order first read."""
        return list(self._requested.values())

    @property
    def errors(self) -> list[EnvError]:
        return list(self._errors)

    def validate(self) -> None:
        """Raise :class:`ConfigError` listing every problem; afterwards getters refuse to run."""
        self._validated = True
        if self._errors:
            raise ConfigError(self._errors)

    def help_text(self, name: str, version: str) -> str:
        """The ``--help`` listing: service, version and every variable read."""
        lines = [f"SERVICE: {name}", f"VERSION: {version}", "CONFIGURATION OPTIONS:"]
        lines += [v.render() for v in self._requested.values()]
        return "\n".join(lines) + "\n"


def _format_default(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, timedelta):
        return f"{value.total_seconds():g}s"
    return str(value)


def _parse_int(value: str) -> int:
    if not _INT.fullmatch(value):
        raise ValueError("not a base-10 integer")
    return int(value)


def _parse_float(value: str) -> float:
    if not _FLOAT.fullmatch(value):
        raise ValueError("not a number")
    return float(value)


def _parse_bool(value: str) -> bool:
    if value in _GO_TRUE:
        return True
    if value in _GO_FALSE:
        return False
    raise ValueError("expected one of 1, t, true, 0, f, false")


def _parse_percent(value: str) -> int:
    p = _parse_int(value)
    if not 0 <= p <= 100:
        raise ValueError("must be 0 <= p <= 100")
    return p


# -- user configuration ---------------------------------------------------------------


def load_config(env: Env, config_type: type[ConfigT]) -> ConfigT:
    """Load a service's configuration type through ``env``.

    ``config_type`` is either a class with a ``load(env)`` classmethod (the upstream
    ``ConfigLoader`` shape), or a pydantic model whose fields are read from
    upper-cased variables (honouring ``alias`` and a settings ``env_prefix``).
    """
    loader = getattr(config_type, "load", None)
    if callable(loader):
        return cast(ConfigT, loader(env))
    if hasattr(config_type, "model_fields"):
        return cast(ConfigT, _load_pydantic(env, config_type))
    raise TypeError(f"{config_type.__name__} has no load(env) classmethod and is not a pydantic model")


def _load_pydantic(env: Env, model: Any) -> Any:
    import pydantic  # only services that use pydantic configs pay for the import

    prefix = str(getattr(model, "model_config", {}).get("env_prefix", "") or "")
    variables: dict[str, str] = {}  # validation key (alias or field name) -> variable
    raw: dict[str, str] = {}
    for field_name, field in model.model_fields.items():
        key = field.alias or field_name
        variable = variables[key] = (field.alias or f"{prefix}{field_name}").upper()
        required = field.is_required()
        default = None if required else _format_default(field.get_default(call_default_factory=True))
        secret = "Secret" in getattr(field.annotation, "__name__", "")
        env._lookup(variable, default, field.description or field_name, required=required, secret=secret)
        value = env._environ.get(variable)
        if value is None:
            if required:
                env.add_error(variable, "required but not set")
        elif value == "" and required:
            env.add_error(variable, "set to an empty value; a value is required")
        else:
            raw[key] = value
    try:
        return model.model_validate(raw)
    except pydantic.ValidationError as exc:
        for error in exc.errors():
            key = str(error["loc"][0]) if error["loc"] else ""
            if error["type"] == "missing" and key not in raw:
                continue  # already reported above
            env.add_error(variables.get(key, key), error["msg"])
        return model.model_construct()
