"""torchvision's ResNet-18, written in ``flax.nnx`` layer for layer (NHWC).

The same modules in the same order as ``torchvision.models.resnet18`` (conv1, bn1,
layer1..layer4 of two BasicBlocks each, fc), the same paddings, strides and BatchNorm
settings (eps 1e-5; torch's momentum 0.1 is Flax's 0.9), so that weights move across
one to one (``winit_jax.parity``) and ``torch_like.init(model, key,
overrides=torch_like.resnet_recipe())`` draws what torchvision draws.
"""

from __future__ import annotations

from flax import nnx

# torch BatchNorm2d(eps=1e-5, momentum=0.1). Flax's default variance is E[x^2] - E[x]^2 (one
# pass, ``use_fast_variance=True``), torch's the mean of squared deviations: in float32 the
# one-pass form loses digits where the mean is large against the spread, and after 5 SGD
# steps in train mode at batch 2 it put a BatchNorm bias 1.4e-2 from torch's (torch's own
# float32-vs-float64 gap: 4.4e-5; the two-pass form: 4.0e-5), tests/porting/test_parity_harness.py.
BN = dict(epsilon=1e-5, momentum=0.9, use_fast_variance=False)


def _kernel(kernel_init) -> dict:
    """``kernel_init=`` for a Flax layer, or nothing (Flax's default)."""
    return {} if kernel_init is None else {"kernel_init": kernel_init}


def _conv(cin, cout, k, stride, pad, rngs, param_dtype, kernel_init=None):
    return nnx.Conv(cin, cout, (k, k), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
                    use_bias=False, param_dtype=param_dtype, rngs=rngs, **_kernel(kernel_init))


class BasicBlock(nnx.Module):
    """conv3x3 - BN - ReLU - conv3x3 - BN, plus the (downsampled) input, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int, *, rngs: nnx.Rngs, param_dtype,
                 kernel_init=None):
        self.conv1 = _conv(cin, cout, 3, stride, 1, rngs, param_dtype, kernel_init)
        self.bn1 = nnx.BatchNorm(cout, **BN, param_dtype=param_dtype, rngs=rngs)
        self.conv2 = _conv(cout, cout, 3, 1, 1, rngs, param_dtype, kernel_init)
        self.bn2 = nnx.BatchNorm(cout, **BN, param_dtype=param_dtype, rngs=rngs)
        if stride != 1 or cin != cout:
            self.downsample = nnx.List([
                _conv(cin, cout, 1, stride, 0, rngs, param_dtype, kernel_init),
                nnx.BatchNorm(cout, **BN, param_dtype=param_dtype, rngs=rngs)])
        else:
            self.downsample = None

    def __call__(self, x):
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.downsample is not None:
            x = self.downsample[1](self.downsample[0](x))
        return nnx.relu(y + x)


class ResNet18(nnx.Module):
    """``torchvision.models.resnet18(num_classes=...)`` in nnx; inputs (N, H, W, 3).
    ``kernel_init`` (default: Flax's) draws every convolution and the head's kernel.

    Examples:
      >>> from flax import nnx
      >>> model = nnx.eval_shape(lambda: ResNet18(num_classes=10, rngs=nnx.Rngs(0)))
      >>> model.conv1.kernel.get_value().shape, model.fc.kernel.get_value().shape
      ((7, 7, 3, 64), (512, 10))
    """

    def __init__(self, num_classes: int = 1000, *, rngs: nnx.Rngs, param_dtype=None,
                 kernel_init=None):
        import jax.numpy as jnp
        param_dtype = param_dtype or jnp.float32
        self.conv1 = _conv(3, 64, 7, 2, 3, rngs, param_dtype, kernel_init)
        self.bn1 = nnx.BatchNorm(64, **BN, param_dtype=param_dtype, rngs=rngs)
        widths = (64, 128, 256, 512)
        cin = 64
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nnx.List([
                BasicBlock(cin, w, stride, rngs=rngs, param_dtype=param_dtype,
                           kernel_init=kernel_init),
                BasicBlock(w, w, 1, rngs=rngs, param_dtype=param_dtype, kernel_init=kernel_init)]))
            cin = w
        self.fc = nnx.Linear(512, num_classes, param_dtype=param_dtype, rngs=rngs,
                             **_kernel(kernel_init))

    def __call__(self, x):
        x = nnx.relu(self.bn1(self.conv1(x)))
        x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in layer:
                x = block(x)
        return self.fc(x.mean(axis=(1, 2)))  # AdaptiveAvgPool2d((1, 1)), flatten
