"""Vectorisable GELU, erf, exp and softmax for the TVM CPU target (a Relax pass run before LegalizeOps).

LegalizeOps lowers `erf` to `tir.erf`, which LLVM calls as libm's scalar `erff`: deit-small's
fc1 GEMM (197×384×1536) ran 2.0 ms with its bias and 3.6 ms once its GELU was fused in (dev VM,
2 threads). TOPI's `fast_erf`/`fast_exp` are polynomials (Eigen's), plain arithmetic that the
schedules vectorise; relax's own FastMathTransform does not reach `nn.gelu`, so this pass adds it.
The whole-model error stays within the target's fp32 check (≤ 1e-4 max abs against the reference).
"""

from __future__ import annotations

import math


def _fast_gelu(x):
    from tvm import te, tirx, topi

    half, rsqrt2 = tirx.const(0.5, x.dtype), tirx.const(1 / math.sqrt(2.0), x.dtype)
    erf = topi.fast_erf(te.compute(x.shape, lambda *i: x(*i) * rsqrt2, name="gelu_in"))
    return te.compute(x.shape, lambda *i: x(*i) * (half + erf(*i) * half), name="gelu")


def rewrite_relax_functions(mod, rewriter):
    """`mod` after `rewriter` (a PyExprMutator made on it) has visited every Relax function."""
    from tvm import relax

    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(gv, rewriter.visit_expr(func))
    return rewriter.builder_.get()


def fast_math():
    """The Relax module pass: float32 `nn.gelu` becomes x·½(1 + fast_erf(x/√2)), then relax's own
    FastMathTransform turns softmax/exp/erf/tanh into TOPI's fast forms."""
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    @mutator
    class _Gelu(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if getattr(call.op, "name", None) != "relax.nn.gelu" or getattr(getattr(call.args[0], "ty", None), "dtype", None) != "float32":
                return call
            return self.builder_.call_te(_fast_gelu, call.args[0])

    @tvm.transform.module_pass(opt_level=0, name="EdgeattnFastGelu")
    def _gelu(mod, _ctx):
        return rewrite_relax_functions(mod, _Gelu(mod))

    return tvm.transform.Sequential([_gelu, relax.transform.FastMathTransform()])
