"""Per-term gradients inside the training step: the one backend-specific module of lossweave.

Used only by a model compiled with `diagnostics=` or a gradient-based balancer; every other
`lw.Model` trains with Keras's own train step, untouched. Each path below is Keras's own backend
train step (`keras/src/backend/{jax,tensorflow,torch}/trainer.py`, Keras 3.15), with the same
forward pass and loss, plus the gradient of each weighted term (`compute_loss` leaves the terms
in `model._lw.stash`):

- JAX: `jax.vjp` of `[loss, w_1 L_1, ..., w_K L_K]` inside the jitted step; the update's
  gradient is one vector-Jacobian product (what `jax.value_and_grad` computes), the terms' are
  the others, `jax.vmap`ped;
- TensorFlow: one persistent `tf.GradientTape`;
- torch: `torch.autograd.grad(..., retain_graph=True)`.

Diagnostics alone compute the terms' gradients only on their steps: under `jax.lax.cond`, under
`tf.cond`, and behind a Python `if` on the step count on torch (one read of a CPU scalar); in
between the step computes what Keras's step computes. A gradient-based balancer needs them every
step.

>>> sorted(_STEPS)
['jax', 'tensorflow', 'torch']
"""

from __future__ import annotations

from typing import NamedTuple

import keras
from keras import ops

from lossweave._keras import unscale_loss_for_distribution


class Stash(NamedTuple):
    """What `compute_loss` leaves for the gradients: weighted terms, values, step before it."""

    weighted: list
    values: list
    step: object


def train_step(model, *args, **kwargs):
    """The train step of `model` with per-term gradients, on the current backend."""
    return _STEPS[keras.backend.backend()](model, *args, **kwargs)


def _combine(model, grads, term_grads, stash, conditional):
    """The gradient to apply; hands the diagnostics' measurement to `compute_metrics`."""
    lw = model._lw
    diagnostics, balancer = lw.diagnostics, lw.balancer
    measured = None
    if balancer is not None:
        per_term = term_grads()
        if diagnostics is not None:
            measured = diagnostics.measure(per_term, grads)
        index = lw.balanced_index
        values = ops.stack([stash.values[i] for i in index])
        grads = balancer.combine(lw.balance_state, values, [per_term[i] for i in index], grads)
    if diagnostics is not None:
        due = diagnostics.due(stash.step)
        if measured is None:
            measured = conditional(
                due,
                lambda: diagnostics.measure(term_grads(), grads),
                lambda: diagnostics.nothing(len(stash.values)),
            )
        lw.pending = (measured, due)
    return grads


def _filled(grads, variables):
    """Zeros for the variables a term does not reach (autodiff says None)."""
    return [ops.zeros(v.shape, v.dtype) if g is None else g for g, v in zip(grads, variables)]


def _first_batch_size(x, shape):
    return shape(next(i for i in keras.tree.flatten(x) if i is not None))[0]


def _jax_train_step(model, state, data):
    import jax
    import jax.numpy as jnp

    trainable, non_trainable, optimizer_variables, metrics_variables = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)

    def forward(trainable):
        loss, aux = model.compute_loss_and_updates(
            trainable, non_trainable, metrics_variables, x, y, sample_weight,
            training=True, optimizer_variables=optimizer_variables,
        )
        stash = model._lw.stash
        outputs = jnp.stack([loss] + [jnp.asarray(w, loss.dtype) for w in stash.weighted])
        return outputs, (aux, stash.values, stash.step)

    outputs, vjp, (aux, values, step) = jax.vjp(forward, trainable, has_aux=True)
    basis = jnp.eye(outputs.shape[0], dtype=outputs.dtype)
    (grads,) = vjp(basis[0])

    def term_grads():
        (rows,) = jax.vmap(vjp)(basis[1:])
        return [[leaf[k] for leaf in rows] for k in range(outputs.shape[0] - 1)]

    unscaled_loss, y_pred, non_trainable, metrics_variables = aux
    stash = Stash(None, values, step)  # the weighted terms are the rows of `outputs`
    mapping = list(zip(model.non_trainable_variables, non_trainable))
    with keras.StatelessScope(state_mapping=mapping) as scope:
        grads = _combine(model, list(grads), term_grads, stash, jax.lax.cond)
    non_trainable = [scope.get_current_value(v) for v in model.non_trainable_variables]
    trainable, optimizer_variables = model.optimizer.stateless_apply(
        optimizer_variables, grads, trainable
    )
    logs, metrics_variables = model._update_metrics_variables(
        metrics_variables, unscaled_loss, x, y, y_pred, sample_weight
    )
    return logs, (trainable, non_trainable, optimizer_variables, metrics_variables)


def _tensorflow_train_step(model, data):
    import tensorflow as tf

    if tf.distribute.get_strategy().num_replicas_in_sync > 1:  # one stash per model, not replica
        raise NotImplementedError(
            "diagnostics= and gradient-based balancers (gradnorm, pcgrad) run on one device; "
            "under a tf.distribute strategy with several replicas, compile without them."
        )
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    with tf.GradientTape(persistent=True) as tape:
        y_pred = model(x, training=True) if model._call_has_training_arg else model(x)
        loss = model._compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
        )
        model._loss_tracker.update_state(
            unscale_loss_for_distribution(loss), sample_weight=_first_batch_size(x, tf.shape)
        )
        if model.optimizer is not None:
            loss = model.optimizer.scale_loss(loss)
    variables = model.trainable_weights
    stash = model._lw.stash
    grads = _filled(tape.gradient(loss, variables), variables)

    def term_grads():
        return [_filled(tape.gradient(w, variables), variables) for w in stash.weighted]

    grads = _combine(model, grads, term_grads, stash, tf.cond)
    del tape
    model.optimizer.apply_gradients(zip(grads, variables))
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def _torch_train_step(model, data):
    import torch

    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    y_pred = model(x, training=True) if model._call_has_training_arg else model(x)
    model.zero_grad()
    loss = model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
    model._loss_tracker.update_state(loss, sample_weight=_first_batch_size(x, lambda t: t.shape))
    if model.optimizer is not None:
        loss = model.optimizer.scale_loss(loss)
    variables = model.trainable_weights[:]
    tensors = [v.value for v in variables]
    stash = model._lw.stash

    def gradient(target):
        grads = torch.autograd.grad(target, tensors, retain_graph=True, allow_unused=True)
        return _filled(grads, variables)

    def term_grads():
        return [gradient(w) for w in stash.weighted]

    def python_if(due, then, otherwise):
        return then() if bool(due) else otherwise()

    grads = _combine(model, gradient(loss), term_grads, stash, python_if)
    with torch.no_grad():
        model.optimizer.apply(grads, variables)
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


_STEPS = {"jax": _jax_train_step, "tensorflow": _tensorflow_train_step, "torch": _torch_train_step}
