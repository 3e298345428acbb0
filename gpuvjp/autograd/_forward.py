"""Forward mode: a tangent carried beside each tensor, and the rules that push it through ops.

A tensor whose `_tangent` is set is dual; while a dual level is open, `apply` gives every op's
output the tangent computed by the op's forward rule. Elementwise ops need no rule of their
own: their Jacobian is diagonal, so their vjp rules applied to a tangent give its image.
"""

from __future__ import annotations

import threading
import weakref

__all__ = ["active", "tangent", "defjvp", "deflinear", "levels"]

_state = threading.local()


def levels() -> int:
    return getattr(_state, "levels", 0)


def active() -> bool:
    return levels() > 0 and not getattr(_state, "suspended", False)


def enter():
    _state.levels = levels() + 1
    stack = getattr(_state, "nodes", None)
    if stack is None:
        stack = _state.nodes = []
    stack.append([])
    return _state.levels - 1


def exit_():
    _state.levels = max(levels() - 1, 0)
    stack = getattr(_state, "nodes", None)
    if stack:
        # Once its level closes, no rule reads a node's output tangent again: dropping it
        # breaks the cycle node -> tangent -> the tangent's own graph -> node.
        for ref in stack.pop():
            node = ref()
            if node is not None:
                node.ans_tangent = None


def tangent(op, args, ans, params):
    """The output tangent of `op` applied to dual `args`."""
    from .._tensor import Tensor
    from ..ops import shape as _shape

    rule = op.jvp
    if rule is None:
        if op.vjps is None:
            raise RuntimeError(f"Trying to use forward AD with {op.name} that does not "
                               "support it: the op has no derivative")
        rule = _elementwise if op.elementwise else _transposed_vjp
    node = ans._node
    if node is not None and node.ans is not None and _state.nodes:
        _state.nodes[-1].append(weakref.ref(node))   # apply stores the tangent on the node
    # The rule sees an alias of the output (same array, same history), never the output
    # itself: the output holds the tangent, so a tangent whose graph held the output would
    # keep both alive in a reference cycle.
    alias = Tensor._make(ans._data, ans._dev, ans._dtype, node)
    alias._requires_grad, alias._nb = ans._requires_grad, ans._nb
    _state.suspended = True
    try:
        t = rule(op, args, alias, params)
        if t is not None:
            if t.shape != ans.shape:
                t = _shape.expand(t, *ans.shape)
            if t._dtype is not ans._dtype:
                t = _shape.to_dtype(t, ans._dtype)
    finally:
        _state.suspended = False
    return t


def _tangents(args):
    return [getattr(a, "_tangent", None) for a in args]


def _elementwise(op, args, ans, params):
    total = None
    for i, t in enumerate(_tangents(args)):
        if t is None or op.vjps[i] is None:
            continue
        c = op.vjps[i](t, ans, *args, **params)
        if c is not None:
            total = c if total is None else total + c
    return total


def _transposed_vjp(op, args, ans, params):
    """J t for an op with vjp rules only: g -> vjp(g) is linear, so the vjp of that map at
    g = 0 with cotangent t is J t (the double-backward trick, one op at a time)."""
    from .._creation import zeros
    from . import _mode, grad
    total = None
    outer = _mode.is_grad_enabled()          # a differentiable jvp records this too
    with _mode.enable_grad():
        g = zeros(ans.shape, dtype=ans.dtype, device=ans.device, requires_grad=True)
        for i, t in enumerate(_tangents(args)):
            if t is None or op.vjps[i] is None:
                continue
            x = args[i]
            c = op.vjps[i](g, ans, *args, **params)
            if c is None:
                continue
            from ..ops.shape import sum_to
            c = sum_to(c, x.shape, x._dtype)
            if not c.requires_grad:
                continue                        # the rule ignores g: no contribution
            (jt,) = grad(c, g, t, retain_graph=True, create_graph=outer, allow_unused=True)
            if jt is not None:
                total = jt if total is None else total + jt
    return total


def defjvp(op, *rules):
    """One rule per positional input: rule(t, ans, *inputs, **params) -> the output tangent
    contributed by that input's tangent `t` (None: no contribution)."""
    def jvp(op_, args, ans, params):
        total = None
        for i, t in enumerate(_tangents(args)):
            if t is None or i >= len(rules) or rules[i] is None:
                continue
            c = rules[i](t, ans, *args, **params)
            if c is not None:
                total = c if total is None else total + c
        return total
    op.jvp = jvp
    return op


def deflinear(*ops):
    """Ops linear in their one tensor input (reshape, sum, indexing...): the tangent goes
    through the op itself."""
    def jvp(op_, args, ans, params):
        t = args[0]._tangent
        return None if t is None else op_(t, *args[1:], **params)
    for op in ops:
        op.jvp = jvp
