"""Inert stand-in for `paddle.fluid`, which Paddle 3 removed; written by vidkit's scripts/peers.sh
into the paddle tier's venv as paddle/fluid/{__init__,framework,core,layer_helper,data_feeder}.py
and paddle/fluid/dygraph/__init__.py.

ppvideo 2.3.1 imports names from paddle.fluid at module level (paddlevideo/modeling/heads/ops.py,
RoI ops for AVA detection) but the recognition models never call them: every name resolves to a
placeholder that raises when used. Importing it also restores
`paddle.device.is_compiled_with_npu` (removed in Paddle 3, called in ppvideo's forward passes),
answering False: this is a CPU build. ops.py is imported whenever ppvideo's models are, so this
runs before any forward.
"""
import paddle


class _Removed:
    def __init__(self, name):
        self._name = name

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"paddle.fluid.{self._name} does not exist in Paddle 3 (vidkit peers stub)")

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Removed(f"{self._name}.{name}")


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _Removed(name)


if not hasattr(paddle.device, "is_compiled_with_npu"):
    paddle.device.is_compiled_with_npu = lambda: False
