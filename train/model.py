"""PyTorch BNN layers and the network builder whose eval-mode forward is what the hardware
computes.

Binarization (DESIGN.md section 2): ``sign(x) = +1 if x >= 0 else -1``; the backward pass is the
straight-through estimator with a clipped identity (gradient passed where ``|x| <= 1``, zero
elsewhere). Weights are real-valued latents, used through ``sign`` and clipped to ``[-1, 1]``
after every optimiser step (:meth:`BinaryNet.clip_weights`).

A :class:`BinaryNet` is, in order (a layer specification, :func:`parse_layers`, says which):

- a first weight layer on unsigned ``in_bits``-bit integer pixels ``x``, binary weights:
  :class:`FirstLinear` or :class:`FirstConv2d` (the bnnhw kinds ``first`` and
  ``first_conv``).
  ``acc = sign(W) x`` is computed on the raw integers, which float32 does exactly (every partial
  sum is an integer below ``2**24``), then the fixed linear input normalisation
  ``x' = (x / (2**in_bits - 1) - mean) / std`` is applied to ``acc`` (it commutes with the dot
  product), times the XNOR-Net scale ``alpha`` if enabled; then BatchNorm and ``sign``.
- :class:`BinaryConv2d` and :class:`BinaryLinear` layers on +-1 inputs: ``alpha * sign(W) x``
  (+ optional bias), BatchNorm, ``sign`` (kinds ``conv`` and ``dense``); ``max_pool2d`` after
  the sign (kind ``maxpool``: the max of +-1 values is the OR of their bits).
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

from bnnhw.errors import BnnhwError

__all__ = [
    "SCALINGS", "PRESETS", "LayerSpecError", "SignSTE", "RoundSTE", "binarize", "parse_layers",
    "format_layers", "preset_layers", "preset_hidden", "FirstLinear", "BinaryLinear",
    "FirstConv2d", "BinaryConv2d", "OutputLinear", "BinaryNet", "BinaryMLP", "stream_order",
]

SCALINGS = ("none", "alpha")
# The named models, as layer specifications (see parse_layers): FINN's TFC, SFC and LFC MLPs
# for MNIST, a small MLP and a small CNN for the 8x8 digits, a CNN for MNIST sized for the
# iCEBreaker's UP5K, and FINN's CNV for 3 x 32 x 32 images (CIFAR-10).
PRESETS = {
    "digits": "dense:128,dense:128",
    "tfc": "dense:64,dense:64,dense:64",
    "sfc": "dense:256,dense:256,dense:256",
    "lfc": "dense:1024,dense:1024,dense:1024",
    "digits_cnn": "conv:32:3,conv:64:3,pool:2,dense:128",
    "mnist_cnn": "conv:16:3,conv:32:3,pool:2,conv:64:3,pool:2",     # fits a UP5K (iCEBreaker)
    "cnv": "conv:64:3,conv:64:3,pool:2,conv:128:3,conv:128:3,pool:2,conv:256:3,conv:256:3,"
           "dense:512,dense:512",
}


class LayerSpecError(BnnhwError):
    """A layer specification that cannot be parsed."""


def parse_layers(text):
    """Parse a layer specification: comma-separated ``conv:CHANNELS:KERNEL`` (a binary
    convolution, stride 1, no padding, BatchNorm and sign), ``pool:SIZE`` (max-pool after the
    sign, stride SIZE) and ``dense:NEURONS``; the output layer is implied. Returns a tuple of
    ``("conv", channels, kernel)``, ``("pool", size)`` and ``("dense", neurons)``."""
    if isinstance(text, (tuple, list)):
        return tuple(tuple(layer) for layer in text)
    layers = []
    for token in str(text).split(","):
        kind, *numbers = token.strip().split(":")
        arity = {"conv": 2, "pool": 1, "dense": 1}.get(kind)
        try:
            values = [int(n) for n in numbers]
        except ValueError:
            values = None
        if arity is None or values is None or len(values) != arity or min(values) < 1:
            raise LayerSpecError(f"layer {token.strip()!r} is not conv:CHANNELS:KERNEL, "
                                 f"pool:SIZE or dense:NEURONS with positive integers")
        layers.append((kind, *values))
    if not layers or layers[0][0] == "pool":
        raise LayerSpecError(f"layers {text!r} must start with a conv or dense layer")
    return tuple(layers)


def format_layers(layers):
    """The text form of parsed ``layers`` (inverse of :func:`parse_layers`)."""
    return ",".join(":".join(str(v) for v in layer) for layer in layers)


def preset_layers(name):
    """Return the parsed layers of the preset ``name`` (one of :data:`PRESETS`)."""
    if name not in PRESETS:
        raise ValueError(f"model {name!r} is not one of {', '.join(PRESETS)}")
    return parse_layers(PRESETS[name])


def preset_hidden(name):
    """Return the hidden sizes of a dense-only preset ``name``."""
    layers = preset_layers(name)
    if any(kind != "dense" for kind, *_ in layers):
        raise ValueError(f"model {name!r} is not a plain MLP")
    return tuple(n for _, n in layers)


def stream_order(h):
    """Torch activations as the golden model holds them: ``(B, C, H, W)`` tensors in stream
    order (``(B, H * W * C)``, :mod:`bnnhw.tensor`), vectors as they are."""
    return h.permute(0, 2, 3, 1).reshape(len(h), -1) if h.dim() == 4 else h


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
    """Shared weight handling: latent weights, binarization, XNOR-Net scale.

    ``in_features`` is the fan-in of one output (``C * k * k`` for a convolution); the weight
    has ``(out_features, *kernel_shape)`` elements, the kernel holding ``in_features``.
    """

    def __init__(self, in_features, out_features, scaling, kernel_shape=None):
        super().__init__()
        if scaling not in SCALINGS:
            raise ValueError(f"scaling {scaling!r} is not one of {', '.join(SCALINGS)}")
        self.in_features, self.out_features, self.scaling = in_features, out_features, scaling
        shape = (in_features,) if kernel_shape is None else tuple(kernel_shape)
        self.weight = nn.Parameter(torch.empty(out_features, *shape))
        self.binary = True
        bound = 1 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)

    def effective_weight(self):
        """Return the weights the forward pass uses: ``sign(W)`` (``W`` when not binary)."""
        return binarize(self.weight) if self.binary else self.weight

    def alpha(self):
        """Return the per-neuron scale ``mean |W|`` with scaling 'alpha', else None."""
        if self.scaling == "alpha":
            return self.weight.abs().flatten(1).mean(dim=1)
        return None

    def clip_weights(self):
        """Clip the latent weights to [-1, 1] in place."""
        with torch.no_grad():
            self.weight.clamp_(-1, 1)


def _normalise(layer, in_bits, mean, std):
    """Give a first layer its fixed input normalisation: ``scale`` and ``shift`` such that
    ``x' = (x / (2**in_bits - 1) - mean) / std = scale * x + shift``."""
    if not std > 0:
        raise ValueError(f"input std must be positive, not {std!r}")
    layer.in_bits, layer.mean, layer.std = in_bits, float(mean), float(std)
    layer.scale = 1.0 / (((1 << in_bits) - 1) * layer.std)
    layer.shift = -layer.mean / layer.std


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
        _normalise(self, in_bits, mean, std)

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


class _Conv(_Binary):
    """A convolution's weights ``(out, in, k, k)``: stride 1, no padding."""

    def __init__(self, in_channels, out_channels, kernel, scaling):
        super().__init__(in_channels * kernel * kernel, out_channels, scaling,
                         kernel_shape=(in_channels, kernel, kernel))
        self.in_channels, self.kernel = in_channels, kernel

    def _scaled(self, out):
        alpha = self.alpha()
        return out if alpha is None else out * alpha.view(1, -1, 1, 1)


class FirstConv2d(_Conv):
    """First convolution: integer pixels ``(B, C, H, W)``, binary weights, the fixed linear
    input normalisation of :class:`FirstLinear` (folded the same way on export)."""

    def __init__(self, in_channels, out_channels, kernel, *, in_bits, scaling="none", mean=0.0,
                 std=1.0):
        super().__init__(in_channels, out_channels, kernel, scaling)
        _normalise(self, in_bits, mean, std)

    def forward(self, x):
        w = self.effective_weight()
        out = F.conv2d(x, w) * self.scale
        if self.shift:
            out = out + self.shift * w.sum(dim=(1, 2, 3)).view(1, -1, 1, 1)
        return self._scaled(out)


class BinaryConv2d(_Conv):
    """Binary convolution on +-1 inputs ``(B, C, H, W)``: ``alpha * conv(x, sign(W))``."""

    def forward(self, x):
        return self._scaled(F.conv2d(x, self.effective_weight()))


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


class BinaryNet(nn.Module):
    """A binarized network: weight layers (convolution or dense, each with BatchNorm and
    ``sign``), max-pools after the sign, and an output layer (see the module docstring).

    Inputs are ``(B, C * H * W)`` unsigned integer pixels in stream order (as datasets give
    them, :mod:`bnnhw.tensor`); a network that starts with a convolution views them as
    ``(B, C, H, W)``. A dense layer after a convolution or pool takes torch's flattened
    ``(C, H, W)`` order; the export reorders its weights to stream order.

    Parameters
    ----------
    in_shape : (int, int, int)
        ``(C, H, W)`` of a frame.
    in_bits : int
        Bits per pixel.
    layers : str or sequence
        A layer specification (:func:`parse_layers`), output layer implied.
    classes : int
        Output classes.
    scaling : str
        ``"none"`` or ``"alpha"`` for every weight layer but the output.
    dropout : float
        Dropout probability before every weight layer but the first, in training only.
    mean, std : float
        Input normalisation (see :class:`FirstLinear`).
    momentum, eps : float
        BatchNorm running-statistics momentum and epsilon.
    """

    def __init__(self, in_shape, in_bits, layers, classes, *, scaling="none", dropout=0.0,
                 mean=0.0, std=1.0, momentum=0.1, eps=1e-5):
        super().__init__()
        layers = parse_layers(layers)
        in_shape = tuple(int(d) for d in in_shape)
        if len(in_shape) != 3 or min(in_shape) < 1:
            raise ValueError(f"in_shape must be (C, H, W), not {in_shape!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout {dropout!r} is outside 0..1")
        self.in_shape, self.in_bits, self.layers, self.classes = in_shape, in_bits, layers, classes
        self.in_features = math.prod(in_shape)
        self.linears = nn.ModuleList()
        self.norms = nn.ModuleList()
        # The sequence: ("weight", index into linears), ("pool", size). `shapes[n]` is the
        # input of step n: (C, H, W) while spatial, (N,) once flat.
        self.steps, self.shapes = [], []
        c, h, w = in_shape
        shape = in_shape if layers[0][0] == "conv" else (self.in_features,)
        for kind, *values in layers:
            self.shapes.append(shape)
            first = not self.linears
            if kind == "conv":
                if len(shape) != 3:
                    raise LayerSpecError("conv layers must come before dense ones, not after")
                out, k = values
                c, h, w = shape
                if k > h or k > w:
                    raise LayerSpecError(f"a {k}x{k} kernel does not fit a {h}x{w} input")
                layer = (FirstConv2d(c, out, k, in_bits=in_bits, scaling=scaling, mean=mean,
                                     std=std) if first
                         else BinaryConv2d(c, out, k, scaling=scaling))
                self._add(layer, nn.BatchNorm2d(out, eps=eps, momentum=momentum))
                shape = (out, h - k + 1, w - k + 1)
            elif kind == "pool":
                p = values[0]
                if len(shape) != 3 or p > min(shape[1:]):
                    raise LayerSpecError(f"a {p}x{p} pool does not fit the input {shape}")
                self.steps.append(("pool", p))
                shape = (shape[0], shape[1] // p, shape[2] // p)
            else:
                n = values[0]
                fan_in = math.prod(shape)
                layer = (FirstLinear(fan_in, n, in_bits=in_bits, scaling=scaling, mean=mean,
                                     std=std) if first
                         else BinaryLinear(fan_in, n, scaling=scaling))
                self._add(layer, nn.BatchNorm1d(n, eps=eps, momentum=momentum))
                shape = (n,)
        self.shapes.append(shape)
        self.output = OutputLinear(math.prod(shape), classes)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self._binary = True

    def _add(self, layer, norm):
        self.steps.append(("weight", len(self.linears)))
        self.linears.append(layer)
        self.norms.append(norm)

    @property
    def hidden(self):
        """Widths of the dense layers (an MLP's hidden sizes)."""
        return tuple(layer.out_features for layer in self.linears)

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

    def _input(self, x):
        if len(self.shapes[0]) == 3:
            c, h, w = self.in_shape
            return x.reshape(len(x), h, w, c).permute(0, 3, 1, 2)
        return x

    def _run(self, x, record=None):
        h = self._input(x)
        for kind, value in self.steps:
            if kind == "pool":
                h = F.max_pool2d(h, value)
                if record is not None:
                    record.append((None, None, stream_order((h >= 0).to(torch.uint8))))
                continue
            linear, norm = self.linears[value], self.norms[value]
            if value:
                h = self.dropout(h)
            if isinstance(linear, (FirstLinear, BinaryLinear)) and h.dim() == 4:
                h = h.flatten(1)
            z = linear(h)
            v = norm(z)
            h = self._activate(v)
            if record is not None:
                record.append((z, v, stream_order((v >= 0).to(torch.uint8))))
        return self.dropout(h.flatten(1) if h.dim() == 4 else h)

    def trace(self, x):
        """Run integer inputs ``x`` (B, in_features) and return every intermediate value.

        Returns ``(z, v, bits, scores)``, lists over the network's layers but the output:
        ``z[n]`` a weight layer's linear output, ``v[n]`` its BatchNorm output (whose sign is
        the activation), both None for a pool; ``bits[n]`` the layer's output as 0/1 ``uint8``
        in stream order (bit 1 is +1); ``scores`` are the output layer's scores. Equal to the
        exported network only in eval mode with ``binary`` set.
        """
        record = []
        h = self._run(x, record)
        zs, vs, bits = ([entry[k] for entry in record] for k in range(3))
        return zs, vs, bits, self.output.scores(h)

    def forward(self, x):
        return self.output(self._run(x))

    def norm_of(self, step):
        """The BatchNorm of network layer ``step`` (None for a pool)."""
        kind, value = self.steps[step]
        return self.norms[value] if kind == "weight" else None

    def clip_weights(self):
        """Clip every latent weight to [-1, 1] (call after each optimiser step)."""
        for layer in [*self.linears, self.output]:
            layer.clip_weights()


def BinaryMLP(in_features, in_bits, hidden, classes, **options):
    """A :class:`BinaryNet` of dense layers ``hidden`` on ``in_features`` pixels."""
    hidden = tuple(hidden)
    if not hidden or not all(isinstance(h, int) and h > 0 for h in hidden):
        raise ValueError(f"hidden sizes must be one or more positive integers, "
                         f"not {hidden!r}")
    return BinaryNet((in_features, 1, 1), in_bits, [("dense", h) for h in hidden], classes,
                     **options)
