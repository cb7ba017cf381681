"""Runyard's graph engine: pure Python, no Django, no database.

Parse a spec with `parse_spec`, build the initial state with `initial_state`, then iterate
`Executor(spec, ctx).run(state, position)`: one StepResult (a checkpoint) per step. The durable
runtime persists each result; the `run_graph` command just prints them.
"""

from . import builtin_functions  # noqa: F401  (registers the shipped functions)
from .cancel import CancelToken
from .context import HttpPolicy, NodeContext, RunContext
from .errors import (
    ExpressionError,
    ExpressionLimit,
    NodeError,
    Problem,
    RunCancelled,
    RunFailed,
    SpecError,
)
from .executor import Executor
from .expressions import compile_expression, compile_template, evaluate, render_template
from .functions import FunctionRegistry, get_function, register_function, registry
from .nodes import KINDS, NodeKind, Outcome, register_kind
from .results import ArtifactData, Resolution, StepResult, Suspension, Usage
from .spec import GraphSpec, canonical_json, check_spec, load_text, parse_spec
from .state import REDUCERS, apply_update, initial_state, validate_input

__all__ = [
    "KINDS",
    "REDUCERS",
    "ArtifactData",
    "CancelToken",
    "Executor",
    "ExpressionError",
    "ExpressionLimit",
    "FunctionRegistry",
    "GraphSpec",
    "HttpPolicy",
    "NodeContext",
    "NodeError",
    "NodeKind",
    "Outcome",
    "Problem",
    "Resolution",
    "RunCancelled",
    "RunContext",
    "RunFailed",
    "SpecError",
    "StepResult",
    "Suspension",
    "Usage",
    "apply_update",
    "canonical_json",
    "check_spec",
    "compile_expression",
    "compile_template",
    "evaluate",
    "get_function",
    "initial_state",
    "load_text",
    "parse_spec",
    "register_function",
    "register_kind",
    "registry",
    "render_template",
    "validate_input",
]
