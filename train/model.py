"""PyTorch BNN layers and the MLP builder whose eval-mode forward is what the hardware computes.

Binarization (DESIGN.md section 2): ``sign(x) = +1 if x >= 0 else -1``; the backward pass is the
straight-through estimator with a clipped identity (gradient passed where ``|x| <= 1``, zero
elsewhere). Weights are real-valued latents, used through ``sign`` and clipped to ``[-1, 1]``
after every optimiser step (:meth:`BinaryMLP.clip_weights`).

A :class:`BinaryMLP` is, in order:

- :class:`FirstLinear`: unsigned ``in_bits``-bit integer pixels ``x``, binary weights.
  ``acc = sign(W) x`` is computed on the raw integers, which float32 does exactly (every partial
  sum is an integer below ``2**24``), then the fixed linear input normalisation
  ``x' = (x / (2**in_bits - 1) - mean) / std`` is applied to ``acc`` (it commutes with the dot
  product), times the XNOR-Net scale ``alpha`` if enabled; then BatchNorm1d and ``sign``.
- :class:`BinaryLinear` hidden layers on +-1 inputs: ``alpha * sign(W) x`` (+ optional bias),
  BatchNorm1d, ``sign``.
- :class:`OutputLinear`: ``scores = sign(W) x + round(offset)``, with the offset rounded by a
  straight-through estimator, so scores are the integers the ``output`` layer of a network file
  holds (``scales = 1``); the logits for the loss are ``temperature * scores`` with one learned
  positive temperature, which leaves the argmax alone. ``torch.argmax`` sends ties to the lowest
  index, as the golden model does.

Every torch activation is therefore a function of integers except the BatchNorm comparisons,
which run in float32 and may differ from the exported integer thresholds (float64) only when a
value lies within float32 rounding of the boundary: the export measures how often.

``model.binary = False`` (the first step of two-step training) uses the clipped latent weights
as they are and ``hardtanh`` instead of ``sign``, with unrounded offsets.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "SCALINGS", "PRESETS", "SignSTE", "RoundSTE", "binarize", "preset_hidden",
    "FirstLinear", "BinaryLinear", "OutputLinear", "BinaryMLP",
]

SCALINGS = ("none", "alpha")
# Hidden sizes of the named models: FINN's TFC, SFC and LFC MLPs for MNIST, and a small default
# for the 8x8 digits.
PRESETS = {
    "digits": (128, 128),
    "tfc": (64, 64, 64),
    "sfc": (256, 256, 256),
    "lfc": (1024, 1024, 1024),
}


def preset_hidden(name):
    """Return the hidden sizes of the preset `name` (one of :data:`PRESETS`)."""
    if name not in PRESETS:
        raise ValueError(f"model {name!r} is not one of {', '.join(PRESETS)}")
    return PRESETS[name]


class SignSTE(torch.autograd.Function):
    """``sign`` with ``sign(0) = +1``; gradient ``grad * (|x| <= 1)`` (clipped identity)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


class RoundSTE(torch.autograd.Function):
    """``torch.round`` forward (halves to even), identity gradient."""

    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


def binarize(x):
    """Return ``sign(x)`` in {-1, +1} with the clipped straight-through gradient."""
    return SignSTE.apply(x)


class _Binary(nn.Module):
    """Shared weight handling: latent weights, binarization, XNOR-Net scale."""

    def __init__(self, in_features, out_features, scaling):
        super().__init__()
        if scaling not in SCALINGS:
            raise ValueError(f"scaling {scaling!r} is not one of {', '.join(SCALINGS)}")
        self.in_features, self.out_features, self.scaling = in_features, out_features, scaling
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.binary = True
        bound = 1 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)

    def effective_weight(self):
        """Return the weights the forward pass uses: ``sign(W)`` (``W`` when not binary)."""
        return binarize(self.weight) if self.binary else self.weight

    def alpha(self):
        """Return the per-neuron scale ``mean |W|`` with scaling 'alpha', else None."""
        if self.scaling == "alpha":
            return self.weight.abs().mean(dim=1)
        return None

    def clip_weights(self):
        """Clip the latent weights to [-1, 1] in place."""
        with torch.no_grad():
            self.weight.clamp_(-1, 1)


class FirstLinear(_Binary):
    """First layer: integer inputs, binary weights, fixed linear input normalisation.

    Computes ``alpha * (scale * (sign(W) x) + shift * rowsum(sign(W)))`` for unsigned integer
    inputs ``x`` (as floats), with ``scale = 1 / ((2**in_bits - 1) * std)`` and
    ``shift = -mean / std``: a binary linear layer on the normalised input.

    Parameters
    ----------
    in_features, out_features : int
        Fan-in and neurons.
    in_bits : int
        Inputs are ``0 .. 2**in_bits - 1``.
    scaling : str
        ``"none"`` or ``"alpha"`` (XNOR-Net ``mean |W|`` per neuron).
    mean, std : float
        Input normalisation applied after dividing by ``2**in_bits - 1``; ``std > 0``.
    """

    def __init__(self, in_features, out_features, *, in_bits, scaling="none", mean=0.0,
                 std=1.0):
        super().__init__(in_features, out_features, scaling)
        if not std > 0:
            raise ValueError(f"input std must be positive, not {std!r}")
        self.in_bits, self.mean, self.std = in_bits, float(mean), float(std)
        self.scale = 1.0 / (((1 << in_bits) - 1) * self.std)
        self.shift = -self.mean / self.std

    def forward(self, x):
        w = self.effective_weight()
        out = F.linear(x, w) * self.scale
        if self.shift:
            out = out + self.shift * w.sum(dim=1)
        alpha = self.alpha()
        return out if alpha is None else out * alpha


class BinaryLinear(_Binary):
    """Binary dense layer on +-1 inputs: ``alpha * (sign(W) x) + bias``.

    Parameters
    ----------
    in_features, out_features : int
        Fan-in and neurons.
    scaling : str
        ``"none"`` or ``"alpha"``.
    bias : bool
        Add a learned bias (redundant before BatchNorm; folded into thresholds on export).
    """

    def __init__(self, in_features, out_features, *, scaling="none", bias=False):
        super().__init__(in_features, out_features, scaling)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x):
        out = F.linear(x, self.effective_weight())
        alpha = self.alpha()
        if alpha is not None:
            out = out * alpha
        return out if self.bias is None else out + self.bias


class OutputLinear(_Binary):
    """Output layer: integer scores ``sign(W) x + round(offset)``, logits ``t * scores``.

    :meth:`scores` are exactly the ``output`` layer's scores with ``scales = 1`` (for +-1 inputs
    and while ``|scores| < 2**24``); :meth:`forward` returns the logits for the loss. The offset
    parameter counts in units of ``sqrt(in_features)`` so that Adam moves it at a useful pace.
    """

    def __init__(self, in_features, out_features):
        super().__init__(in_features, out_features, "none")
        self.offset_unit = math.sqrt(in_features)
        self.offset = nn.Parameter(torch.zeros(out_features))
        # Logits of about unit size for random +-1 inputs at the start.
        self.log_temperature = nn.Parameter(torch.tensor(-0.5 * math.log(in_features)))

    def offsets(self):
        """Return the per-class offsets: integers (rounded) when binary."""
        offset = self.offset * self.offset_unit
        return RoundSTE.apply(offset) if self.binary else offset

    def scores(self, x):
        """Return the class scores for +-1 inputs ``x``."""
        return F.linear(x, self.effective_weight()) + self.offsets()

    def forward(self, x):
        return self.scores(x) * self.log_temperature.exp()


class BinaryMLP(nn.Module):
    """A binarized MLP: first layer, hidden binary layers, output layer (see module docstring).

    Parameters
    ----------
    in_features : int
        Pixels per frame.
    in_bits : int
        Bits per pixel.
    hidden : sequence of int
        Neurons of each binary layer before the output (at least one: the first layer's).
    classes : int
        Output classes.
    scaling : str
        ``"none"`` or ``"alpha"`` for the first and hidden layers.
    dropout : float
        Dropout probability before every layer but the first, in training only.
    mean, std : float
        Input normalisation (see :class:`FirstLinear`).
    momentum, eps : float
        BatchNorm running-statistics momentum and epsilon.
    """

    def __init__(self, in_features, in_bits, hidden, classes, *, scaling="none", dropout=0.0,
                 mean=0.0, std=1.0, momentum=0.1, eps=1e-5):
        super().__init__()
        hidden = tuple(hidden)
        if not hidden or not all(isinstance(h, int) and h > 0 for h in hidden):
            raise ValueError(f"hidden sizes must be one or more positive integers, "
                             f"not {hidden!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout {dropout!r} is outside 0..1")
        self.in_features, self.in_bits, self.hidden, self.classes = (
            in_features, in_bits, hidden, classes)
        self.linears = nn.ModuleList()
        self.norms = nn.ModuleList()
        fan_in = in_features
        for n, width in enumerate(hidden):
            if n == 0:
                layer = FirstLinear(fan_in, width, in_bits=in_bits, scaling=scaling, mean=mean,
                                    std=std)
            else:
                layer = BinaryLinear(fan_in, width, scaling=scaling)
            self.linears.append(layer)
            self.norms.append(nn.BatchNorm1d(width, eps=eps, momentum=momentum))
            fan_in = width
        self.output = OutputLinear(fan_in, classes)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self._binary = True

    @property
    def binary(self):
        """Whether weights and activations are binarized (False: step one of two-step)."""
        return self._binary

    @binary.setter
    def binary(self, value):
        self._binary = bool(value)
        for layer in [*self.linears, self.output]:
            layer.binary = self._binary

    def _activate(self, v):
        return binarize(v) if self._binary else F.hardtanh(v)

    def trace(self, x):
        """Run integer inputs ``x`` (B, in_features) and return every intermediate value.

        Returns ``(z, v, bits, scores)``, lists over the binary layers: ``z[n]`` is layer
        ``n``'s linear output, ``v[n]`` its BatchNorm output (whose sign is the activation),
        ``bits[n]`` the activation as 0/1 ``uint8`` (bit 1 is +1); ``scores`` are the output
        layer's scores. Equal to the exported network only in eval mode with ``binary`` set.
        """
        zs, vs, bits = [], [], []
        h = x
        for n, (linear, norm) in enumerate(zip(self.linears, self.norms)):
            if n:
                h = self.dropout(h)
            z = linear(h)
            v = norm(z)
            h = self._activate(v)
            zs.append(z), vs.append(v), bits.append((v >= 0).to(torch.uint8))
        return zs, vs, bits, self.output.scores(self.dropout(h))

    def forward(self, x):
        h = x
        for n, (linear, norm) in enumerate(zip(self.linears, self.norms)):
            if n:
                h = self.dropout(h)
            h = self._activate(norm(linear(h)))
        return self.output(self.dropout(h))

    def clip_weights(self):
        """Clip every latent weight to [-1, 1] (call after each optimiser step)."""
        for layer in [*self.linears, self.output]:
            layer.clip_weights()
