"""The notebooks' digits through ``parity.check``: ``winit_jax.lab.examples``' small CNN
trained one epoch of the embedded sample, scored on the real MNIST test split."""

from __future__ import annotations

import numpy as np


def mnist_cnn(*, data_dir=None, batch_size: int = 100, seed: int = 0):
    """The small CNN on real digits: one epoch of the embedded sample (5,000 training digits,
    /256, shuffled by ``seed``) in batches of ``batch_size``, SGD lr 0.01 momentum 0.6 (the
    notebook's), cross-entropy; accuracy on the real MNIST test split (10,000 digits) when
    it is under ``data_dir`` (default: ``default_data_dir()``), else on the sample."""
    import torch
    from flax import nnx

    from winit_jax import parity
    from winit_jax.lab import data
    from winit_jax.lab.examples import flax_cnn, torch_cnn
    from winit_jax.lab.experiment import default_data_dir
    from winit_jax.parity import nhwc

    images, labels = data.load_sample()
    x = (images.astype(np.float32) / np.float32(256))[:, None]  # notebook A's /256, NCHW
    order = np.random.default_rng(seed).permutation(len(x))
    batches = [dict(inputs=x[i], targets=labels[i])
               for i in np.array_split(order, len(x) // batch_size)]
    try:
        test_images, test_labels = data.load_mnist(data_dir or default_data_dir(), "test")
        held_out = dict(inputs=(test_images.astype(np.float32) / np.float32(256))[:, None],
                        targets=test_labels)
    except data.MNISTNotFoundError:
        held_out = dict(inputs=x, targets=labels)
    torch.manual_seed(seed)
    return (torch_cnn(), nnx.eval_shape(lambda: flax_cnn(nnx.Rngs(seed))), batches[0]["inputs"],
            dict(targets=batches[0]["targets"], batches=batches, flax_inputs=nhwc, train=True, learning_rate=0.01,
                 momentum=0.6, metric=parity.accuracy, eval_data=held_out, init_seeds=4,
                 loss=parity.cross_entropy))
