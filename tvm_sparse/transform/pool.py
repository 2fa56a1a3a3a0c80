"""``PoolKernels``: NHWC pooling and global average pooling on the project's kernels.

TVM's default CPU schedules leave a max pooling and a spatial ``mean`` over
a large image far from memory speed (a global average pool of 112x112x256
took 7 ms); after layout conversion they are NHWC, and this pass gives them
:mod:`tvm_sparse.kernels.pool`'s kernels (channels as vector lanes):

* ``max_pool2d`` / ``avg_pool2d`` in NHWC (ceil mode on static sizes; an
  average's ``count_include_pad`` as ONNX defines it);
* ``mean`` over the spatial axes of an NHWC tensor, and ``adaptive_avg_pool2d``
  to 1x1 (global average pooling).
"""

from __future__ import annotations

import tvm
from tvm import relax

from ..graph import shape_of
from ..kernels import Im2Col
from ..kernels.pool import pool2d_kernel, spatial_mean_kernel
from .call_rewriter import CallRewriter, rewrite_calls

_POOLS = {"relax.nn.max_pool2d": "max", "relax.nn.avg_pool2d": "avg"}


def _float32_nhwc(expr) -> tuple | None:
    shape = shape_of(expr)
    return (
        shape if shape is not None and len(shape) == 4 and str(expr.ty.dtype) == "float32" else None
    )


def _window(call: relax.Call, shape: tuple, out_shape: tuple) -> Im2Col | None:
    """The pooling window of ``call`` (None where the kernel does not serve it)."""
    attrs = call.attrs
    if (str(attrs.layout), str(attrs.out_layout)) != ("NHWC", "NHWC"):
        return None
    top, left, bottom, right = (int(p) for p in attrs.padding)
    window = Im2Col(
        shape,
        tuple(int(k) for k in attrs.pool_size),
        tuple(int(s) for s in attrs.strides),
        (top, left),
        tuple(int(d) for d in attrs.dilation),
        padding_end=(bottom, right),
    )
    if not attrs.ceil_mode:
        return window
    if not all(isinstance(d, int) for d in (*shape[1:3], *out_shape[1:3])) or (
        _POOLS[call.op.name] == "avg" and attrs.count_include_pad
    ):
        return None
    # Ceil mode: the end padding that gives the output size (its windows never count that padding).
    (kh, kw), (sh, sw), (dh, dw) = window.kernel, window.strides, window.dilation
    end = (
        (out_shape[1] - 1) * sh + dh * (kh - 1) + 1 - shape[1] - top,
        (out_shape[2] - 1) * sw + dw * (kw - 1) + 1 - shape[2] - left,
    )
    return Im2Col(
        shape, window.kernel, window.strides, (top, left), window.dilation, padding_end=end
    )


def _spatial_mean(call: relax.Call, shape: tuple) -> bool:
    name = call.op.name
    if name == "relax.nn.adaptive_avg_pool2d":
        out = call.attrs.output_size
        return (
            str(call.attrs.layout) == "NHWC"
            and str(call.attrs.out_layout) == "NHWC"
            and out is not None
            and [int(v) for v in out] == [1, 1]
        )
    if name == "relax.mean" and call.attrs.axis is not None:
        return sorted(int(a) % 4 for a in call.attrs.axis) == [1, 2]
    return False


def _pool_call(rw: CallRewriter, call: relax.Call, var: relax.Var) -> relax.Expr | None:
    shape, out_shape = _float32_nhwc(call.args[0]) if call.args else None, shape_of(var)
    if shape is None or out_shape is None:
        return None
    name = call.op.name
    if name in _POOLS:
        window = _window(call, shape, out_shape)
        if window is None:
            return None
        kernel = pool2d_kernel(
            window,
            _POOLS[name],
            bool(getattr(call.attrs, "count_include_pad", False)),
            name=f"{_POOLS[name]}_pool2d",
        )
        gvar = rw.add_kernel(kernel, f"{_POOLS[name]}_pool2d")
        return relax.call_tir(
            gvar, [rw.visit_expr(call.args[0])], relax.TensorType(out_shape, "float32")
        )
    if _spatial_mean(call, shape):
        gvar = rw.add_kernel(spatial_mean_kernel(shape), "spatial_mean")
        pooled = relax.call_tir(
            gvar,
            [rw.visit_expr(call.args[0])],
            relax.TensorType((shape[0], 1, 1, shape[3]), "float32"),
        )
        return (
            pooled if len(out_shape) == 4 else relax.op.reshape(rw.builder_.emit(pooled), out_shape)
        )
    return None


@tvm.transform.module_pass(opt_level=0, name="PoolKernels")
class PoolKernels:
    """Lower NHWC float32 max/average pooling and global average pooling to the project's kernels."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_calls(mod, _pool_call)
