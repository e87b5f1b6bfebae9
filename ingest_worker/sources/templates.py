"""The few `value_template` forms MQTT discovery devices really publish, evaluated without Jinja.

Home Assistant renders value templates with Jinja2. Devices (zigbee2mqtt, ESPHome, Tasmota, Shelly…)
use a tiny corner of it: read the payload (`value`) or a key path into its JSON (`value_json.a.b`,
`value_json['a']`, `value_json["a"][0]`), optionally coerced by `| float`, `| int`, `| round(n)`
(with defaults: `| float(0)`, `| int(default=0)`) or guarded by `| is_defined`. Configs come from
anything that can publish to the broker, so evaluating arbitrary Jinja in the always-on worker would be
an interpreter exposed to untrusted input; this module parses exactly that subset once, when a config
arrives, and refuses everything else as `Reason.UNSUPPORTED_TEMPLATE` instead of guessing.

Results render as Home Assistant would render them, so a state stored here equals the state HA shows:
Python's `str()` of the value (`27.34`, `97`, `True`, `None`), filters with HA's "forgiving" semantics
(`"21.7" | int` is 21, `| round` without precision gives an int, a failed coercion without a default is
an error). Render errors are `Rejected` with a reason a human can act on, never an exception escaping.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from ingest_worker.rejections import Reason, Rejected
from ingest_worker.sources.base import JSON_ERRORS

# Real device templates are well under 200 characters; a longer one is not one of the supported forms.
MAX_TEMPLATE_CHARS = 1024
# Distinct template texts across a fleet are few (one per JSON key a device family publishes).
MAX_CACHED_TEMPLATES = 4096
# Keeps error details (which land in the dead-letter store) readable.
MAX_DETAIL_CHARS = 80
SUPPORTED_FILTERS = ("float", "int", "round", "is_defined")

_TOKEN = re.compile(r"""
    \s*(?:
        (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<number>-?[0-9]+(?:\.[0-9]+)?)
      | '(?P<single>[^'\\\n]*)'
      | "(?P<double>[^"\\\n]*)"
      | (?P<punct>[.\[\]|(),=])
    )\s*""", re.VERBOSE)


class _NotJson:
    """Marks a payload that is not JSON, so a template that only reads `value` still renders."""

    def __repr__(self) -> str:
        return "NOT_JSON"


NOT_JSON: Final = _NotJson()


def load_json(text: str) -> object:
    """The payload as `value_json` sees it, or `NOT_JSON` (HA leaves value_json undefined then)."""
    try:
        return json.loads(text)
    except JSON_ERRORS:
        return NOT_JSON


@dataclass(frozen=True, slots=True)
class Filter:
    name: str
    precision: int = 0
    default: int | float | None = None
    has_default: bool = False


@dataclass(frozen=True, slots=True)
class ValueTemplate:
    """A parsed template: `path is None` reads `value`, else a key path into `value_json`."""

    source: str
    path: tuple[str | int, ...] | None
    filters: tuple[Filter, ...] = ()

    @property
    def needs_json(self) -> bool:
        return self.path is not None

    def render(self, value: str, value_json: object = NOT_JSON) -> str:
        """The state string HA would show for this payload; `Rejected` when it cannot be rendered."""
        result = value if self.path is None else self._lookup(value_json, self.path)
        for step in self.filters:
            result = _apply(step, result, self.source)
        if isinstance(result, dict | list):
            kind = "an object" if isinstance(result, dict) else "a list"
            raise Rejected(Reason.SCHEMA, f"{_short(self.source)} renders {kind}, not a state")
        return str(result)

    def _lookup(self, data: object, path: tuple[str | int, ...]) -> object:
        if data is NOT_JSON:
            raise Rejected(Reason.INVALID_JSON,
                           f"state payload is not JSON but {_short(self.source)} reads value_json")
        walked = "value_json"
        for key in path:
            if isinstance(data, dict) and isinstance(key, str):
                if key not in data:
                    where = "" if walked == "value_json" else f" at {walked}"
                    raise Rejected(Reason.SCHEMA, f"key {key!r} missing from state payload{where}")
                data = data[key]
            elif isinstance(data, list) and isinstance(key, int):
                if not -len(data) <= key < len(data):
                    raise Rejected(Reason.SCHEMA, f"index {key} out of range for {walked} ({len(data)} items)")
                data = data[key]
            else:
                kind = type(data).__name__ if data is not None else "null"
                raise Rejected(Reason.SCHEMA, f"{walked} is {kind}, cannot take [{key!r}]")
            walked = f"{walked}[{key!r}]" if isinstance(key, int) or not key.isidentifier() else f"{walked}.{key}"
        return data


def compile_template(text: str) -> ValueTemplate:
    """Parse once per distinct text (cached); `Rejected(UNSUPPORTED_TEMPLATE)` names what is unsupported."""
    if len(text) > MAX_TEMPLATE_CHARS:
        raise Rejected(Reason.UNSUPPORTED_TEMPLATE,
                       f"value_template {_short(text)} is {len(text)} chars, over {MAX_TEMPLATE_CHARS}")
    compiled = _compile_cached(text)
    if isinstance(compiled, str):
        raise Rejected(Reason.UNSUPPORTED_TEMPLATE, f"value_template {_short(text)}: {compiled}")
    return compiled


@lru_cache(maxsize=MAX_CACHED_TEMPLATES)
def _compile_cached(text: str) -> ValueTemplate | str:
    """Errors are returned, not raised, so that unsupported texts are cached too."""
    try:
        return _Parser(text).parse()
    except _Unsupported as exc:
        return str(exc)


class _Unsupported(Exception):
    pass


class _Parser:
    """Recursive descent over `{{ value | value_json (.key | [key])* ( | filter[(args)] )* }}`."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._tokens: list[tuple[str, str]] = []
        self._pos = 0

    def parse(self) -> ValueTemplate:
        body = self._text.strip()
        if not (body.startswith("{{") and body.endswith("}}")) or len(body) < 4:
            raise _Unsupported("only a single {{ expression }} is supported (no {% %} blocks, no text around it)")
        inner = body[2:-2]
        # Jinja whitespace control ({{- … -}}) changes nothing for a template that is one expression.
        inner = inner.removeprefix("-").removesuffix("-")
        if "{{" in inner or "}}" in inner:
            raise _Unsupported("only a single {{ expression }} is supported")
        self._tokens = _tokenize(inner)
        path = self._expression()
        filters: list[Filter] = []
        while self._peek() == ("punct", "|"):
            self._pos += 1
            filters.append(self._filter())
        if self._pos != len(self._tokens):
            raise _Unsupported(f"unexpected {self._tokens[self._pos][1]!r} after the expression")
        return ValueTemplate(self._text, path, tuple(filters))

    def _expression(self) -> tuple[str | int, ...] | None:
        kind, word = self._next("a variable")
        if kind != "name" or word not in ("value", "value_json"):
            raise _Unsupported(f"only value and value_json can be read, not {word!r}")
        if word == "value":
            if self._peek() in (("punct", "."), ("punct", "["), ("punct", "(")):
                raise _Unsupported("value is the raw payload string; read keys through value_json")
            return None
        path: list[str | int] = []
        while self._peek() in (("punct", "."), ("punct", "[")):
            _, opener = self._next("a key")
            kind, key = self._next("a key")
            if opener == ".":
                if kind != "name":
                    raise _Unsupported(f"expected a key name after '.', got {key!r}")
                path.append(key)
                continue
            if kind == "string":
                path.append(key)
            elif kind == "number" and re.fullmatch(r"-?[0-9]+", key):
                path.append(int(key))
            else:
                raise _Unsupported(f"expected a quoted key or an integer index in [ ], got {key!r}")
            self._expect("]")
        if self._peek() == ("punct", "("):
            raise _Unsupported("function and method calls are not supported")
        return tuple(path)

    def _filter(self) -> Filter:
        kind, name = self._next("a filter name")
        if kind != "name" or name not in SUPPORTED_FILTERS:
            raise _Unsupported(f"filter {name!r} is not supported (only {', '.join(SUPPORTED_FILTERS)})")
        args = self._arguments() if self._peek() == ("punct", "(") else []
        if name == "is_defined":
            if args:
                raise _Unsupported("is_defined takes no arguments")
            return Filter(name)
        if name == "round":
            if len(args) > 1 or any(key not in (None, "precision") for key, _ in args):
                raise _Unsupported("round takes only a precision, e.g. round(1)")
            if not args:
                return Filter(name)
            precision = args[0][1]
            if not isinstance(precision, int):
                raise _Unsupported("round's precision must be an integer")
            return Filter(name, precision=precision)
        if len(args) > 1 or any(key not in (None, "default") for key, _ in args):
            raise _Unsupported(f"{name} takes only a default, e.g. {name}(0)")
        if not args:
            return Filter(name)
        return Filter(name, default=args[0][1], has_default=True)

    def _arguments(self) -> list[tuple[str | None, int | float]]:
        self._expect("(")
        args: list[tuple[str | None, int | float]] = []
        if self._peek() == ("punct", ")"):
            self._pos += 1
            return args
        while True:
            keyword: str | None = None
            kind, text = self._next("an argument")
            if kind == "name" and self._peek() == ("punct", "="):
                self._pos += 1
                keyword = text
                kind, text = self._next("an argument")
            if kind != "number":
                raise _Unsupported(f"filter arguments must be number literals, got {text!r}")
            args.append((keyword, float(text) if "." in text else int(text)))
            _, closer = self._next("',' or ')'")
            if closer == ")":
                return args
            if closer != ",":
                raise _Unsupported(f"expected ',' or ')', got {closer!r}")

    def _peek(self) -> tuple[str, str] | None:
        return self._tokens[self._pos] if self._pos < len(self._tokens) else None

    def _next(self, wanted: str) -> tuple[str, str]:
        token = self._peek()
        if token is None:
            raise _Unsupported(f"expected {wanted}, the expression ended")
        self._pos += 1
        return token

    def _expect(self, punct: str) -> None:
        kind, text = self._next(repr(punct))
        if (kind, text) != ("punct", punct):
            raise _Unsupported(f"expected {punct!r}, got {text!r}")


def _tokenize(inner: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(inner):
        match = _TOKEN.match(inner, pos)
        if match is None or match.end() == pos:
            if not inner[pos:].strip():
                break
            offending = inner[pos:].lstrip()[:1]
            raise _Unsupported(f"operator or character {offending!r} is not supported")
        pos = match.end()
        kind = match.lastgroup
        if kind in ("single", "double"):
            tokens.append(("string", match.group(kind)))
        elif kind is not None:
            tokens.append((kind, match.group(kind)))
    return tokens


def _apply(step: Filter, value: object, source: str) -> object:
    """Home Assistant's forgiving_float / forgiving_int (Jinja's do_int) / forgiving_round."""
    result: object
    try:
        if step.name == "float":
            result = _to_float(value)
        elif step.name == "int":
            result = _to_int(value)
        elif step.name == "round":
            rounded = round(_to_float(value), step.precision)
            result = int(rounded) if step.precision == 0 else rounded
        else:  # is_defined: a missing key already failed in the lookup
            result = value
    except (TypeError, ValueError, OverflowError):
        if step.has_default:
            return step.default
        raise Rejected(Reason.SCHEMA,
                       f"{step.name} filter of {_short(source)} got {_trim(repr(value))}, no default") from None
    return result


def _to_float(value: object) -> float:
    if isinstance(value, str | int | float):
        return float(value)
    raise TypeError(type(value).__name__)


def _to_int(value: object) -> int:
    """Jinja's do_int: strings parse as base-10 integers, else through float (so "21.7" is 21)."""
    if isinstance(value, str):
        try:
            return int(value, 10)
        except ValueError:
            return int(float(value))
    if isinstance(value, int | float):
        return int(value)
    raise TypeError(type(value).__name__)


def _trim(text: str) -> str:
    return text if len(text) <= MAX_DETAIL_CHARS else text[:MAX_DETAIL_CHARS] + "…"


def _short(text: str) -> str:
    return repr(_trim(text))
