"""Ready terms: numerically stable losses for VAEs, mixture densities, sequences and more.

Each is a plain function whose tensor parameters are filled by name from the training step
(`y_true`, `y_pred`, `sample_weight`, `mask`, tap names); the others are configuration, passed
as keyword arguments of `lw.Term`. Most return per-sample values of shape `(batch,)`.
"""

from lossweave.losses.classification import soft_dice, sparse_categorical_focal_loss
from lossweave.losses.kl import gaussian_kl, gaussian_kl_per_dim
from lossweave.losses.mdn import bivariate_mdn_nll, gmm_nll, split_mdn_params
from lossweave.losses.metric_learning import triplet_margin
from lossweave.losses.penalties import activation_penalty
from lossweave.losses.sequence import masked_sequence_crossentropy
