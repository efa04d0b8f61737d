"""Balancers: automatic weighting of an objective's terms, or combination of their gradients.

`lw.Objective(terms, balance=lw.balancers.dwa())` hands the weights of the terms it covers (all of
them, or those named by `terms=[...]`) to the balancer. A balanced term keeps its constant weight
as a factor (`weight * balancer weight`); a scheduled weight on a balanced term is refused. The
weight each balanced term gets is logged as `<name>_weight`. A balancer's state lives in
variables of the compiled model: it is saved in `.keras` files and resumes after loading (load
with `compile=True`, the default, since `compile` creates it).

From loss values: `uncertainty()`, `dwa()`. From per-term gradients (computed in the training
step from its forward pass, see `lossweave._gradients`): `gradnorm()`, `pcgrad()`.

>>> import keras, numpy as np
>>> import lossweave as lw
>>> inputs = keras.Input((3,))
>>> model = lw.Model(inputs, keras.layers.Dense(1)(inputs))
>>> model.compile(optimizer="sgd", loss=lw.Objective(
...     {"mse": "mse", "mae": "mae"}, balance=lw.balancers.uncertainty()))
>>> sorted(model.fit(np.ones((4, 3)), np.ones((4, 1)), verbose=0).history)
['loss', 'mae', 'mae_weight', 'mse', 'mse_weight']
"""

from __future__ import annotations

import keras
from keras import ops

from lossweave.diagnostics import inner, squared_norm


class Balancer:
    """Base class. `weighs`: sets its terms' weights; `uses_gradients`: needs their gradients.

    >>> dwa(terms=["kl"]).covered(["recon", "kl"])
    ['kl']
    """

    weighs = True
    uses_gradients = False
    variables = {}  # {name: (initializer, trainable, per term)}: what `build` creates

    def __init__(self, terms=None):
        if terms is not None and (isinstance(terms, str) or not list(terms)):
            raise ValueError(f"{self!r}: terms= takes a non-empty list of term names; got {terms!r}.")
        self.terms = None if terms is None else list(terms)

    def covered(self, names) -> list:
        """The names of the terms it balances, in the objective's order."""
        if self.terms is None:
            return list(names)
        unknown = [name for name in self.terms if name not in names]
        if unknown:
            raise ValueError(
                f"{self!r} names term(s) {unknown} that the objective does not have; its terms "
                f"are {list(names)}."
            )
        return [name for name in names if name in self.terms]

    def build(self, add_variable, size: int) -> dict:
        """Creates its state with `add_variable(name, shape, initializer, trainable)`; the
        variables are named `<balancer>_<name>`, e.g. `uncertainty_log_variance`."""
        kind = _name(self)
        return {
            name: add_variable(f"{kind}_{name}", (size,) if per_term else (), initializer, trainable)
            for name, (initializer, trainable, per_term) in self.variables.items()
        }

    def weights(self, state):
        """The weights of its terms now (a vector), read inside the step."""
        return state["weights"].value

    def extra(self, state):
        """What each term adds to the loss besides `weight * value`, or None."""
        return None

    def callbacks(self, state, names) -> list:
        """Callbacks `fit` adds (to update the state between epochs)."""
        return []

    def combine(self, state, values, term_grads, grads):
        """The gradient to apply, from each covered term's gradient (gradient-based balancers)."""
        raise NotImplementedError

    def get_config(self):
        return {"terms": self.terms}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if v is not None)
        return f"lw.balancers.{_name(self)}({args})"


@keras.saving.register_keras_serializable(package="lossweave")
class Uncertainty(Balancer):
    """Homoscedastic uncertainty weighting (Kendall, Gal and Cipolla, CVPR 2018).

    Each term `L_i` gets a learnable log-variance `s_i = log sigma_i^2` (a trainable variable of
    the model, initialised to 0, trained by the model's optimizer) and the loss is

        L = sum_i exp(-s_i) * L_i + s_i

    the paper's `1 / (2 sigma_i^2) L_i + log sigma_i` (its eq. 7) multiplied by 2, as in the
    paper's own implementation for regression and classification alike. The logged weight is
    `exp(-s_i)`; at the optimum of `s_i` it is `1 / L_i`, so a term with larger values gets a
    smaller weight.

    Args:
        terms: the names of the terms it balances (default: all).

    >>> uncertainty(terms=["mse"])
    lw.balancers.uncertainty(terms=['mse'])
    """

    variables = {"log_variance": ("zeros", True, True)}

    def weights(self, state):
        return ops.exp(-state["log_variance"].value)

    def extra(self, state):
        return state["log_variance"].value


@keras.saving.register_keras_serializable(package="lossweave")
class DWA(Balancer):
    """Dynamic weight average (Liu, Johns and Davison, CVPR 2019, eq. 1).

    With `K` balanced terms and `L_k(t)` term `k`'s mean over epoch `t` (its logged value):

        w_k(t) = K exp(r_k(t-1) / T) / sum_i exp(r_i(t-1) / T),   r_k(t-1) = L_k(t-1) / L_k(t-2)

    and `w_k(t) = 1` for the first two epochs (`t = 0, 1`). The weights are set between epochs
    from the training logs; the epoch means of the last two epochs are part of the state.

    Args:
        temperature: `T`; a larger `T` makes the weights more even.
        terms: the names of the terms it balances (default: all).

    >>> dwa(temperature=2.0)
    lw.balancers.dwa(temperature=2.0)
    """

    variables = {"weights": ("ones", False, True), "last_means": ("zeros", False, True),
             "earlier_means": ("zeros", False, True), "epochs": ("zeros", False, False)}

    def __init__(self, temperature: float = 2.0, terms=None):
        super().__init__(terms)
        if not temperature > 0:
            raise ValueError(f"dwa(temperature=...) must be positive; got {temperature!r}.")
        self.temperature = float(temperature)

    def callbacks(self, state, names):
        return [_DWAUpdate(state, names, self.temperature)]

    def get_config(self):
        return {"temperature": self.temperature, **super().get_config()}


class _DWAUpdate(keras.callbacks.Callback):
    """Shifts the epoch means and sets the weights of the next epoch (DWA, eq. 1)."""

    def __init__(self, state, names, temperature):
        super().__init__()
        self.state, self.names, self.temperature = state, names, temperature

    def on_epoch_end(self, epoch, logs=None):
        means = ops.convert_to_tensor([float(logs[name]) for name in self.names], "float32")
        state = self.state
        state["earlier_means"].assign(state["last_means"].value)
        state["last_means"].assign(means)
        state["epochs"].assign(state["epochs"].value + 1.0)
        if float(state["epochs"].value) >= 2:
            ratios = ops.divide_no_nan(means, state["earlier_means"].value)
            state["weights"].assign(len(self.names) * ops.softmax(ratios / self.temperature))


@keras.saving.register_keras_serializable(package="lossweave")
class GradNorm(Balancer):
    """GradNorm (Chen, Badrinarayanan, Lee and Rabinovich, ICML 2018, eqs. 1-2).

    With `G_i = ||grad_W w_i L_i||_2` (here `W`: all trainable variables of the model, where the
    paper takes the last shared layer; the per-term gradients are those of the step), `G_mean` the
    mean of the `G_i`, `L~_i = L_i(t) / L_i(0)` and `r_i = L~_i / mean_j L~_j`:

        L_grad = sum_i | G_i - G_mean * r_i ** alpha |,   the target `G_mean r_i^alpha` held constant

    After each step the weights take one gradient-descent step on `L_grad`,
    `w_i <- w_i - learning_rate * sign(G_i - target_i) * G_i / w_i` (the exact derivative,
    no second backward pass), are kept at least `1e-3`, and are renormalised to sum to `K` (the
    number of balanced terms). `L_i(0)` is the term's value at the first step it is balanced.

    Args:
        alpha: the restoring force towards equal training rates (the paper uses 0.12 to 3).
        learning_rate: the step size of the weights' own gradient descent.
        terms: the names of the terms it balances (default: all).

    >>> gradnorm(alpha=1.5)
    lw.balancers.gradnorm(alpha=1.5, learning_rate=0.025)
    """

    uses_gradients = True
    variables = {"weights": ("ones", False, True), "initial": ("zeros", False, True),
             "started": ("zeros", False, False)}

    def __init__(self, alpha: float = 1.5, learning_rate: float = 0.025, terms=None):
        super().__init__(terms)
        if not learning_rate > 0:
            raise ValueError(f"gradnorm(learning_rate=...) must be positive; got {learning_rate!r}.")
        self.alpha = float(alpha)
        self.learning_rate = float(learning_rate)

    def combine(self, state, values, term_grads, grads):
        norms = ops.stack([ops.sqrt(squared_norm(g)) for g in term_grads])
        weights = state["weights"].value
        initial = ops.where(state["started"].value > 0, state["initial"].value, values)
        ratios = ops.divide_no_nan(values, initial)
        rates = ops.divide_no_nan(ratios, ops.mean(ratios))
        target = ops.mean(norms) * ops.power(rates, self.alpha)
        step = ops.sign(norms - target) * ops.divide_no_nan(norms, weights)
        updated = ops.maximum(weights - self.learning_rate * step, 1e-3)
        state["weights"].assign(len(term_grads) * updated / ops.sum(updated))
        state["initial"].assign(initial)
        state["started"].assign(1.0)
        return grads

    def get_config(self):
        return {"alpha": self.alpha, "learning_rate": self.learning_rate, **super().get_config()}


@keras.saving.register_keras_serializable(package="lossweave")
class PCGrad(Balancer):
    """PCGrad, gradient surgery (Yu, Kumar, Gupta, Levine, Hausman and Finn, NeurIPS 2020, alg. 1).

    For each balanced term's gradient `g_i`, and each other term `j` (here in the objective's
    order, where the paper shuffles them; for two terms the order does not matter):

        if <g_i^PC, g_j> < 0:   g_i^PC <- g_i^PC - <g_i^PC, g_j> / ||g_j||^2 * g_j

    and the update uses `sum_i g_i^PC` (plus the gradients of the terms it does not cover and of
    `add_loss` terms, unchanged). It sets no weights: its terms keep their own constant weights.

    Args:
        terms: the names of the terms whose gradients it combines (default: all).

    >>> a, b = [ops.convert_to_tensor([1.0, 0.0])], [ops.convert_to_tensor([-1.0, 1.0])]
    >>> [round(float(v), 2) for v in pcgrad().combine(None, None, [a, b], [a[0] + b[0]])[0]]
    [0.5, 1.5]
    """

    weighs = False
    uses_gradients = True

    def combine(self, state, values, term_grads, grads):
        combined = [ops.convert_to_tensor(g) for g in grads]
        for i, term in enumerate(term_grads):
            projected = list(term)
            for j, other in enumerate(term_grads):
                if j != i:
                    dot = inner(projected, other)
                    scale = ops.where(dot < 0, ops.divide_no_nan(dot, squared_norm(other)), 0.0)
                    projected = [p - scale * o for p, o in zip(projected, other)]
            combined = [c - t + p for c, t, p in zip(combined, term, projected)]
        return combined


uncertainty = Uncertainty
dwa = DWA
gradnorm = GradNorm
pcgrad = PCGrad
_NAMES = {Uncertainty: "uncertainty", DWA: "dwa", GradNorm: "gradnorm", PCGrad: "pcgrad"}


def _name(balancer):
    return _NAMES.get(type(balancer), type(balancer).__name__.lower())
