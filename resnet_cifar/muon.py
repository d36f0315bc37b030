"""Muon for convolution filters, SGD for the rest: the optimizer of airbench94_muon (Jordan,
KellerJordan/cifar10-airbench). Each conv kernel's update is its Nesterov momentum made
(about) orthogonal by a few Newton-Schulz iterations; biases, batch norm and the dense head
take SGD with Nesterov momentum, as with optimizer 'nesterov'."""

import keras
from keras import ops

NEWTON_SCHULZ_STEPS = 3  # airbench94_muon's; Keras' default is 5


def is_trained_filter(variable, frozen_paths=()):
    """Whether `variable` is a conv kernel (4-D) that trains, not one of frozen_paths
    (the whitening kernel, whose zero gradient SGD leaves alone; Muon would rescale it)."""
    return len(variable.shape) == 4 and variable.path not in frozen_paths


class ConvMuon(keras.optimizers.Muon):
    """Keras' Muon for conv kernels [h, w, in, out], as airbench94_muon: the update is
    orthogonalized as one [h * w * in, out] matrix (Keras' Muon takes each [in, out] tap alone),
    and before each step the kernel is scaled to the Frobenius norm sqrt(out), so a step of
    `learning_rate` moves it by the same share all run long. No weight decay: the scaling
    replaces it."""

    def __init__(self, learning_rate, momentum, name='conv_muon'):
        super().__init__(
            learning_rate=learning_rate,
            momentum=momentum,
            nesterov=True,
            ns_steps=NEWTON_SCHULZ_STEPS,
            weight_decay=None,
            adam_weight_decay=None,
            rms_rate=None,  # airbench's step: no rescaling by the matrix's shape
            exclude_embeddings=False,
            name=name,
        )

    def _should_use_adamw(self, variable):
        return False  # every variable given to it is a conv kernel

    def _muon_update_step(self, gradient, variable, lr, m):
        norm = ops.sqrt(ops.sum(ops.square(variable)))
        self.assign(variable, variable * (float(variable.shape[-1]) ** 0.5 / norm))
        super()._muon_update_step(gradient, variable, lr, m)

    def zeropower_via_newtonschulz5(self, x, steps):
        """Keras' Newton-Schulz iteration on the kernel flattened to [h * w * in, out]."""
        matrix = ops.reshape(x, (-1, x.shape[-1]))
        return ops.reshape(super().zeropower_via_newtonschulz5(matrix, steps), x.shape)


class MuonAndSGD(keras.optimizers.MultiOptimizer):
    """ConvMuon (`muon`) for the conv kernels is_trained_filter picks, SGD with Nesterov momentum
    (`sgd`) for every other variable; each has its own learning rate."""

    def __init__(self, muon, sgd, frozen_paths=()):
        super().__init__(lambda variable: muon if is_trained_filter(variable, frozen_paths) else sgd)
        self.muon, self.sgd = muon, sgd
