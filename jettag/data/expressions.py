"""Selections and new variables written in the data config, evaluated on awkward arrays.

A small expression language, parsed with Python's `ast` and checked against a whitelist: names
(branches or earlier new variables), numbers, `+ - * / // % **`, comparisons (chained too),
`and or not`, `& | ~`, `x if cond else y`, and calls of the functions in `FUNCTIONS`. Anything
else (attributes, subscripts, lambdas, strings, keyword arguments, unknown functions) is refused
with a `ConfigError` naming the config key. Nothing is passed to Python's `eval`::

    selection: "jet_pt > 500 and abs(jet_eta) < 2"
    new_variables:
      jet_ptrel_lead: "max(part_pt) / jet_pt"
      part_pt: "hypot(part_px, part_py)"
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import awkward as ak
import numpy as np

from jettag.errors import ConfigError


def _reduce(func: Callable) -> Callable:
    return lambda x: func(x, axis=-1)


# name -> (function, number of arguments)
FUNCTIONS: dict[str, tuple[Callable, int]] = {
    "abs": (np.abs, 1),
    "sqrt": (np.sqrt, 1),
    "exp": (np.exp, 1),
    "log": (np.log, 1),
    "log10": (np.log10, 1),
    "log1p": (np.log1p, 1),
    "sin": (np.sin, 1),
    "cos": (np.cos, 1),
    "tan": (np.tan, 1),
    "sinh": (np.sinh, 1),
    "cosh": (np.cosh, 1),
    "tanh": (np.tanh, 1),
    "arcsinh": (np.arcsinh, 1),
    "arctan": (np.arctan, 1),
    "arctan2": (np.arctan2, 2),
    "hypot": (np.hypot, 2),
    "sign": (np.sign, 1),
    "isfinite": (np.isfinite, 1),
    "minimum": (np.minimum, 2),
    "maximum": (np.maximum, 2),
    "clip": (np.clip, 3),
    "where": (ak.where, 3),
    # per-jet reductions over a jet's particles
    "num": (lambda x: ak.num(x, axis=-1), 1),
    "sum": (_reduce(ak.sum), 1),
    "mean": (_reduce(ak.mean), 1),
    "max": (_reduce(ak.max), 1),
    "min": (_reduce(ak.min), 1),
    "any": (_reduce(ak.any), 1),
    "all": (_reduce(ak.all), 1),
}
CONSTANTS = {"pi": np.pi}

_BINARY = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
    ast.BitAnd: operator.and_, ast.BitOr: operator.or_,
}  # fmt: skip
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: np.logical_not, ast.Invert: np.logical_not}
_COMPARE = {
    ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
    ast.Eq: operator.eq, ast.NotEq: operator.ne,
}  # fmt: skip


@dataclass(frozen=True)
class Expression:
    """One parsed, checked expression; `names` are the branches or variables it reads."""

    text: str
    key: str
    tree: ast.Expression
    names: frozenset[str]

    @classmethod
    def parse(cls, text, key: str) -> Expression:
        if isinstance(text, bool) or not isinstance(text, (str, int, float)):
            raise ConfigError(
                f"{key}: {text!r} is not an expression; write it as a string, e.g. 'jet_pt > 500'."
            )
        text = str(text)
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as err:
            raise ConfigError(f"{key}: '{text}' is not a valid expression ({err.msg}).") from None
        called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
        names: set[str] = set()
        for node in ast.walk(tree):
            _check(node, text, key)
            if isinstance(node, ast.Name) and id(node) not in called and node.id not in CONSTANTS:
                names.add(node.id)
        return cls(text, key, tree, frozenset(names))

    def __call__(self, arrays: Mapping) -> ak.Array | np.ndarray:
        with np.errstate(all="ignore"):
            return _evaluate(self.tree.body, arrays)


def _check(node: ast.AST, text: str, key: str) -> None:
    allowed = (
        ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp, ast.Call,
        ast.Name, ast.Load, ast.Constant, ast.And, ast.Or,
        *_BINARY, *_UNARY, *_COMPARE,
    )  # fmt: skip
    if not isinstance(node, allowed):
        raise ConfigError(
            f"{key}: '{text}' uses {type(node).__name__}, which selections and new variables do not allow; "
            "write names, numbers, arithmetic, comparisons, and/or/not and the functions "
            f"{', '.join(sorted(FUNCTIONS))}."
        )
    if isinstance(node, ast.Constant) and (
        isinstance(node.value, bool) or not isinstance(node.value, (int, float))
    ):
        raise ConfigError(f"{key}: '{text}' holds the constant {node.value!r}; only numbers are allowed.")
    if isinstance(node, ast.Call):
        func = node.func.id if isinstance(node.func, ast.Name) else None
        if func not in FUNCTIONS:
            what = func or ast.unparse(node.func)
            raise ConfigError(
                f"{key}: '{text}' calls '{what}', which is not one of the allowed functions "
                f"{', '.join(sorted(FUNCTIONS))}."
            )
        if node.keywords or len(node.args) != FUNCTIONS[func][1]:
            raise ConfigError(f"{key}: '{text}': {func}() takes {FUNCTIONS[func][1]} positional argument(s).")


def _evaluate(node: ast.AST, arrays: Mapping):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        return arrays[node.id]
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_evaluate(node.left, arrays), _evaluate(node.right, arrays))
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_evaluate(node.operand, arrays))
    if isinstance(node, ast.BoolOp):
        combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
        result = _evaluate(node.values[0], arrays)
        for value in node.values[1:]:
            result = combine(result, _evaluate(value, arrays))
        return result
    if isinstance(node, ast.Compare):
        left, result = _evaluate(node.left, arrays), None
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _evaluate(right_node, arrays)
            part = _COMPARE[type(op)](left, right)
            result = part if result is None else np.logical_and(result, part)
            left = right
        return result
    if isinstance(node, ast.IfExp):
        return ak.where(
            _evaluate(node.test, arrays), _evaluate(node.body, arrays), _evaluate(node.orelse, arrays)
        )
    if isinstance(node, ast.Call):
        func, _ = FUNCTIONS[node.func.id]
        return func(*(_evaluate(a, arrays) for a in node.args))
    raise AssertionError(f"unchecked node {type(node).__name__}")  # _check refuses everything else


def parse_new_variables(config: Mapping | None, key: str = "data.new_variables") -> dict[str, Expression]:
    """`{name: expression}` in config order; a variable may use the ones defined before it."""
    if not config:
        return {}
    if not isinstance(config, Mapping):
        raise ConfigError(
            f"{key} must map new names to expressions, e.g. {{jet_ptrel: 'jet_pt / jet_energy'}}."
        )
    variables = {}
    for name, text in config.items():
        if not str(name).isidentifier():
            raise ConfigError(f"{key}: '{name}' is not a valid variable name (letters, digits, _).")
        variables[str(name)] = Expression.parse(text, f"{key}.{name}")
    return variables
