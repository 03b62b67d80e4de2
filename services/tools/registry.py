"""Tool registry and the built-in tools (time in a zone, safe calculator, unit conversion).

A tool is a typed async function plus a JSON schema for its arguments. ``ToolRegistry.execute`` validates
arguments against the schema, runs the tool within its timeout, and returns a JSON-able result; problems are
InvalidArgument / NotFound / DeadlineExceeded with a message that says what to fix.
"""

from __future__ import annotations

import ast
import asyncio
import datetime as dt
import json
import math
import operator
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import jsonschema

from services.kit.errors import DeadlineExceeded, InvalidArgument, NotFound

ToolFn = Callable[..., Awaitable[Any]]


@dataclass
class ToolSpec:
    """A registered tool."""

    name: str
    description: str
    parameters: dict[str, Any]
    fn: ToolFn
    timeout_s: float = 5.0
    survives_interruption: bool = False
    validator: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        jsonschema.Draft202012Validator.check_schema(self.parameters)
        self.validator = jsonschema.Draft202012Validator(self.parameters)


class ToolRegistry:
    """Named tools; ``execute`` is the one way to run them."""

    def __init__(self) -> None:
        self._tools: dict[str, ToolSpec] = {}

    def register(self, spec: ToolSpec) -> None:
        if spec.name in self._tools:
            raise ValueError(f"tool {spec.name!r} registered twice")
        self._tools[spec.name] = spec

    def list(self) -> list[ToolSpec]:
        return sorted(self._tools.values(), key=lambda t: t.name)

    def get(self, name: str) -> ToolSpec:
        try:
            return self._tools[name]
        except KeyError:
            known = ", ".join(sorted(self._tools)) or "none"
            raise NotFound(f"unknown tool {name!r}; registered tools: {known}") from None

    async def execute(self, name: str, arguments_json: str, timeout_s: float | None = None) -> tuple[Any, float]:
        """Validate and run; returns (result, duration_ms)."""
        spec = self.get(name)
        try:
            args = json.loads(arguments_json or "{}")
        except json.JSONDecodeError as e:
            raise InvalidArgument(f"tool {name!r}: arguments are not valid JSON ({e.msg} at char {e.pos})") from None
        if not isinstance(args, dict):
            raise InvalidArgument(f"tool {name!r}: arguments must be a JSON object, got {type(args).__name__}")
        errors = sorted(spec.validator.iter_errors(args), key=lambda e: list(e.path))
        if errors:
            where = "/".join(map(str, errors[0].path)) or "(root)"
            raise InvalidArgument(f"tool {name!r}: argument {where}: {errors[0].message}")
        limit = timeout_s if timeout_s and timeout_s > 0 else spec.timeout_s
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(limit):
                result = await spec.fn(**args)
        except TimeoutError:
            raise DeadlineExceeded(f"tool {name!r} did not finish within {limit:.1f} s") from None
        except ValueError as e:
            raise InvalidArgument(f"tool {name!r}: {e}") from None
        return result, (time.perf_counter() - t0) * 1000


# --- built-in tools -------------------------------------------------------------------------------------------

_ALIASES = {"tokyo": "Asia/Tokyo", "paris": "Europe/Paris", "london": "Europe/London", "new york": "America/New_York",
            "berlin": "Europe/Berlin", "beijing": "Asia/Shanghai", "shanghai": "Asia/Shanghai", "utc": "UTC",
            "los angeles": "America/Los_Angeles", "sydney": "Australia/Sydney", "moscow": "Europe/Moscow"}


async def current_time(timezone: str = "UTC") -> dict[str, str]:
    """Current local time in an IANA time zone (or a well-known city name)."""
    tz_name = _ALIASES.get(timezone.strip().lower(), timezone.strip())
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        close = sorted(z for z in available_timezones() if tz_name.split("/")[-1].lower() in z.lower())[:5]
        hint = close or ["Europe/Paris"]
        raise ValueError(f"unknown time zone {timezone!r}; use an IANA name such as {hint}") from None
    now = dt.datetime.now(tz)
    return {"timezone": tz_name, "time": now.strftime("%H:%M"), "date": now.strftime("%A %d %B %Y"),
            "iso": now.isoformat(timespec="seconds")}


_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_UNOPS: dict[type, Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCS: dict[str, Callable[..., float]] = {"sqrt": math.sqrt, "sin": math.sin, "cos": math.cos, "tan": math.tan,
                                           "log": math.log, "log10": math.log10, "exp": math.exp, "abs": abs,
                                           "round": round}
_CONSTS = {"pi": math.pi, "e": math.e}


_MAX_MAGNITUDE = 1e300  # results and intermediates beyond this are refused (no huge integers, no inf)


def _bounded(value: Any) -> float:
    if isinstance(value, complex):
        raise ValueError("the result is not a real number")
    if isinstance(value, int) and value.bit_length() > 996:  # about 1e300
        raise ValueError("the result is too large")
    if isinstance(value, float) and not math.isfinite(value) or abs(value) > _MAX_MAGNITUDE:
        raise ValueError("the result is too large")
    return value


def _round(x: float, digits: float = 0) -> float:
    if not float(digits).is_integer() or abs(digits) > 15:
        raise ValueError("round(x, n) needs a whole n from -15 to 15")
    return round(x, int(digits))


_FUNCS["round"] = _round


def _eval(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return _bounded(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and (abs(right) > 1000 or abs(left) > 1e6):
            raise ValueError("the exponent is too large: keep x ** y with |x| <= 1e6 and |y| <= 1000")
        return _bounded(_BINOPS[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNOPS:
        return _bounded(_UNOPS[type(node.op)](_eval(node.operand)))
    if isinstance(node, ast.Name) and node.id in _CONSTS:
        return _CONSTS[node.id]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS and not node.keywords:
        if len(node.args) > 2:
            raise ValueError(f"{node.func.id}() takes one or two arguments")
        return _bounded(_FUNCS[node.func.id](*[_eval(a) for a in node.args]))
    raise ValueError(f"unsupported expression element {ast.dump(node)[:40]!r}; use numbers, + - * / // % ** and "
                     f"{', '.join(_FUNCS)}")


def _evaluate(expr: str) -> float:
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        raise ValueError(f"cannot parse {expr!r} as arithmetic") from None
    try:
        return _eval(tree)
    except ZeroDivisionError:
        raise ValueError("division by zero") from None
    except OverflowError:
        raise ValueError("the result is too large") from None
    except (TypeError, ValueError) as e:
        if isinstance(e, ValueError) and not str(e).startswith("math"):
            raise
        raise ValueError(f"not defined for these numbers ({e})") from None


async def calculator(expression: str) -> dict[str, Any]:
    """Evaluate arithmetic safely: parsed to an AST and walked (no eval), every step bounded in size, in a worker
    thread (the registry's deadline applies)."""
    expr = expression.replace("^", "**").replace("×", "*").replace("÷", "/")
    if len(expr) > 200:
        raise ValueError("expression longer than 200 characters")
    value = await asyncio.to_thread(_evaluate, expr)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    return {"expression": expression, "result": value}


_UNITS: dict[str, tuple[str, float]] = {
    # length (metre)
    "m": ("length", 1.0), "km": ("length", 1000.0), "cm": ("length", 0.01), "mm": ("length", 0.001),
    "mi": ("length", 1609.344), "yd": ("length", 0.9144), "ft": ("length", 0.3048), "in": ("length", 0.0254),
    # mass (kilogram)
    "kg": ("mass", 1.0), "g": ("mass", 0.001), "lb": ("mass", 0.45359237), "oz": ("mass", 0.028349523125),
    # volume (litre)
    "l": ("volume", 1.0), "ml": ("volume", 0.001), "gal": ("volume", 3.785411784),
    # speed (m/s)
    "m/s": ("speed", 1.0), "km/h": ("speed", 1 / 3.6), "mph": ("speed", 0.44704),
}
_UNIT_NAMES = {"meter": "m", "meters": "m", "metre": "m", "kilometer": "km", "kilometers": "km", "kilometre": "km",
               "mile": "mi", "miles": "mi", "foot": "ft", "feet": "ft", "inch": "in", "inches": "in",
               "yard": "yd", "yards": "yd", "centimeter": "cm", "centimeters": "cm", "kilogram": "kg",
               "kilograms": "kg", "gram": "g", "grams": "g", "pound": "lb", "pounds": "lb", "ounce": "oz",
               "ounces": "oz", "liter": "l", "liters": "l", "litre": "l", "gallon": "gal", "gallons": "gal",
               "celsius": "c", "fahrenheit": "f", "kelvin": "k"}


def _unit(u: str) -> str:
    key = u.strip().lower().rstrip(".")
    return _UNIT_NAMES.get(key, key)


async def convert_units(value: float, from_unit: str, to_unit: str) -> dict[str, Any]:
    """Convert length, mass, volume, speed and temperature (c, f, k)."""
    src, dst = _unit(from_unit), _unit(to_unit)
    temps = {"c", "f", "k"}
    if src in temps and dst in temps:
        kelvin = {"c": value + 273.15, "f": (value - 32) * 5 / 9 + 273.15, "k": value}[src]
        out = {"c": kelvin - 273.15, "f": (kelvin - 273.15) * 9 / 5 + 32, "k": kelvin}[dst]
    else:
        if src not in _UNITS or dst not in _UNITS:
            bad = src if src not in _UNITS else dst
            raise ValueError(f"unknown unit {bad!r}; known: {', '.join(sorted(_UNITS))}, c, f, k")
        (kind_a, fa), (kind_b, fb) = _UNITS[src], _UNITS[dst]
        if kind_a != kind_b:
            raise ValueError(f"cannot convert {kind_a} ({from_unit}) to {kind_b} ({to_unit})")
        out = value * fa / fb
    return {"value": value, "from": from_unit, "to": to_unit, "result": round(out, 6)}


async def wait(seconds: float) -> dict[str, Any]:
    """Diagnostic: sleep, then report; exercises slow-tool handling."""
    await asyncio.sleep(seconds)
    return {"waited_seconds": seconds}


def default_registry(diagnostic: bool = True, default_timeout_s: float = 5.0) -> ToolRegistry:
    """The built-in tools."""
    reg = ToolRegistry()
    reg.register(ToolSpec(
        "current_time", "Get the current local time and date in a time zone or city.",
        {"type": "object", "properties": {"timezone": {"type": "string", "description": "IANA zone or city"}},
         "required": ["timezone"], "additionalProperties": False}, current_time, default_timeout_s))
    reg.register(ToolSpec(
        "calculator", "Evaluate an arithmetic expression, e.g. '12 * 7' or 'sqrt(2)'.",
        {"type": "object", "properties": {"expression": {"type": "string", "minLength": 1}},
         "required": ["expression"], "additionalProperties": False}, calculator, default_timeout_s))
    reg.register(ToolSpec(
        "convert_units", "Convert a value between units of length, mass, volume, speed or temperature.",
        {"type": "object", "properties": {"value": {"type": "number"}, "from_unit": {"type": "string"},
                                          "to_unit": {"type": "string"}},
         "required": ["value", "from_unit", "to_unit"], "additionalProperties": False}, convert_units,
        default_timeout_s))
    if diagnostic:
        reg.register(ToolSpec(
            "wait", "Wait the given number of seconds, then answer (diagnostic).",
            {"type": "object", "properties": {"seconds": {"type": "number", "minimum": 0, "maximum": 60}},
             "required": ["seconds"], "additionalProperties": False}, wait, 65.0, survives_interruption=True))
    return reg
