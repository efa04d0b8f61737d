"""Argument injection: fill a function's parameters by name from the tensors of a training step.

The signature is inspected once, when the term or metric is built; each step only looks names up.

>>> inject = Injector(lambda y_pred, scale=2.0: y_pred * scale, owner="term 'double'")
>>> inject.resolve(["y_true", "y_pred"])
>>> inject({"y_true": 1.0, "y_pred": 3.0})
6.0
"""

import inspect

from lossweave.step import INJECTABLE

#: Why a tap can be missing at run time although the model's `call` records it.
NOT_RECORDED = (
    "Taps are recorded in the model's own train_step and test_step: a custom train_step must "
    "call super().train_step(...) for the objective and metrics to see them."
)


class Injector:
    """Calls `fn` with its parameters looked up by name in a dict of the step's tensors.

    Args:
        fn: the function (or callable object) to call.
        bind: `{parameter: source_name}` renames, e.g. `{"activation": "layer1"}`.
        fixed: keyword arguments passed unchanged (configuration, not tensors).
        owner: how errors name the term or metric, e.g. `"term 'kl'"`.

    Parameters with a default that no source provides keep their default; a parameter without a
    default that no source provides fails in `resolve` with the list of available names.

    >>> inject = Injector(lambda layer1: layer1 + 1, owner="term 'act'")
    >>> inject.resolve(["y_true", "y_pred"])
    Traceback (most recent call last):
    ...
    ValueError: term 'act' asks for 'layer1', which is not available. Available names: y_true, y_pred. Rename with bind={'layer1': '<available name>'} or add a tap named 'layer1' to the lw.Model.
    """

    def __init__(self, fn, bind=None, fixed=None, owner="function"):
        if not callable(fn):
            raise TypeError(f"{owner}: expected a callable, got {fn!r}.")
        self.fn = fn
        self.bind = dict(bind or {})
        self.fixed = dict(fixed or {})
        self.owner = owner
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{owner}: cannot read the signature of {fn!r} ({e}).") from None
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        self._params = {
            name: p for name, p in signature.parameters.items() if p.kind in kinds
        }
        for name in list(self.bind) + list(self.fixed):
            if name not in self._params:
                raise ValueError(
                    f"{owner}: {name!r} is not a parameter of {getattr(fn, '__name__', fn)!r}; "
                    f"its parameters are {list(self._params)}."
                )
        self.sources = None
        self._late = False

    @property
    def parameters(self):
        """The parameter names the function accepts."""
        return list(self._params)

    def resolve(self, available, late: bool = False):
        """Decides, once, which source fills each parameter; fails on a name nobody provides.

        With `late`, a name nobody provides yet (a tap of a subclassed model, known once it runs)
        is looked for again at the first call, among the names that step has.
        """
        try:
            self._resolve(list(available))
        except ValueError:
            if not late:
                raise
            self._late = True

    def _resolve(self, available):
        sources = {}
        for name, param in self._params.items():
            if name in self.fixed:
                continue
            source = self.bind.get(name, name)
            if source in available:
                sources[name] = source
            elif param.default is inspect.Parameter.empty:
                hint = (
                    f"Rename with bind={{{name!r}: '<available name>'}} or add a tap named "
                    f"{source!r} to the lw.Model."
                )
                raise ValueError(
                    f"{self.owner} asks for {source!r}, which is not available. "
                    f"Available names: {', '.join(available)}. {hint}"
                )
        self.sources = sources

    def __call__(self, tensors):
        if self.sources is None:
            if not self._late:
                raise RuntimeError(f"{self.owner} was called before being resolved.")
            try:
                self._resolve(list(INJECTABLE) + [k for k in tensors if k not in INJECTABLE])
            except ValueError as e:
                raise ValueError(f"{e} {NOT_RECORDED}") from None
        try:
            kwargs = {name: tensors[source] for name, source in self.sources.items()}
        except KeyError as e:
            raise ValueError(
                f"{self.owner} asks for {e.args[0]!r}, which this step does not have. {NOT_RECORDED}"
            ) from None
        return self.fn(**kwargs, **self.fixed)
