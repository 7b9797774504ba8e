"""ABC-Net training: multi-base networks (dense layers, convolutions, max-pools) whose
eval-mode forward is what the ``abc``, ``abc_conv`` and ``abc_output`` kinds compute, and their
export.

A layer holds real latent weights ``W`` (clipped to ``[-1, 1]``) and builds M binary weight
bases from them as ABC-Net does: ``B_m = sign(W - mean(W) + u_m std(W))`` with fixed spread
shifts ``u_m = -1 + 2 m / (M - 1)`` (0 for one base; mean and std over the layer), and the scales
``alpha_m`` that fit ``W ~ sum_m alpha_m B_m`` best in least squares (solved at every step,
no gradient). Activations are N binary bases of the BatchNorm output ``v``:
``H_n = sign(v - s_n)`` with learned shifts ``s_n``, weighted in the next layer by learned
positive scales ``beta_n``; ``sign`` has a clipped straight-through gradient for each base.

The coefficients of a layer are ``c_mn = 2**f * alpha_m beta_n / max(alpha beta)`` (``f``
fraction bits, relative to the largest product, since BatchNorm follows and the output layer's
temperature absorbs any common scale). Once ``quantized`` (the last epochs, and export) they
are rounded to integers in ``1 .. 2**f`` (straight-through), so the network trained in those
epochs is the exported one:

- the first layer computes ``z = 2**-f (scale * Z + shift * sum_m c_m rowsum(B_m))`` with the
  integer ``Z = sum_m c_m (B_m . x)`` on raw pixels (``scale``, ``shift``: the input
  normalisation, as :class:`~bnnhw.train.model.FirstLinear`);
- a hidden layer ``z = 2**-f Z`` with ``Z = sum_mn c_mn (B_m . H_n)`` on the previous layer's
  bases;
- every hidden layer's bits are ``v_n = BN(z) - s_n >= 0``: folded into N integer thresholds
  on ``Z`` per neuron (the ``abc`` kind), a neuron with negative gamma stored with its rows
  inverted and thresholds negated;
- the output layer's scores are ``Z + round(offset)`` (``abc_output``, scales 1), the logits
  ``t 2**-f`` times them;
- a convolution is the same per window (``abc_conv``; weights reordered from torch's ``(O, C,
  k, k)`` to ``(O, k, k, C)`` per base), a max-pool pools each base on its own (the kind
  ``maxpool`` on N-bit values), and a dense layer after them reorders its columns from torch's
  ``(C, H, W)`` to stream order.

In eval mode ``Z`` is computed exactly (products of +-1 and integers in float32, below
``2**24``, summed in float64), so torch and the golden model differ only where a BatchNorm
output lies within float32 rounding of a shift (:func:`bnnhw.train.export.self_check` counts
these ties).
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bnnhw import artifact, kinds

from .export import SelfCheckError, _bn, fold_thresholds
from .model import LayerSpecError, RoundSTE, binarize, parse_layers, stream_order

__all__ = ["ABCNet", "ABCLinear", "ABCConv2d", "export_abc", "spread_shifts", "fit_alpha"]


def spread_shifts(bases):
    """ABC-Net's ``u_m``: ``bases`` values spread evenly over ``-1 .. 1`` (0 for one base)."""
    if bases == 1:
        return [0.0]
    return [-1.0 + 2.0 * m / (bases - 1) for m in range(bases)]


def fit_alpha(weight, bases):
    """The least-squares ``alpha`` of ``weight ~ sum_m alpha_m bases[m]`` (no gradient)."""
    with torch.no_grad():
        a = bases.reshape(len(bases), -1).double()
        gram = a @ a.T + 1e-6 * torch.eye(len(bases), dtype=torch.float64)
        return torch.linalg.solve(gram, a @ weight.reshape(-1).double()).float()


class ABCLinear(nn.Module):
    """A dense layer of M weight bases on K input bases (or on unsigned pixels: ``in_bits``).

    :meth:`forward` takes ``(B, K, F)`` +-1 bases (or ``(B, F)`` pixels) and returns the real
    ``z`` (see the module docstring); :meth:`integer` returns ``Z`` exactly.
    """

    def __init__(self, in_features, out_features, *, weight_bases, in_bases, fraction_bits,
                 in_bits=None, mean=0.0, std=1.0, kernel_shape=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.bases, self.in_bases, self.fraction_bits = weight_bases, in_bases, fraction_bits
        self.in_bits = in_bits
        shape = (in_features,) if kernel_shape is None else tuple(kernel_shape)
        self.weight = nn.Parameter(torch.empty(out_features, *shape))
        bound = 1 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        self.register_buffer("shifts", torch.tensor(spread_shifts(weight_bases)))
        # beta_n of the input bases, as logarithms (positive); pixels have none.
        self.log_beta = (nn.Parameter(torch.zeros(in_bases)) if in_bits is None else None)
        self.quantized = False
        if in_bits is not None:
            self.scale = 1.0 / (((1 << in_bits) - 1) * std)
            self.shift = -mean / std

    def weight_bases(self):
        """``(M, out, F)`` +-1 bases, with a straight-through gradient to ``weight``."""
        w = self.weight
        with torch.no_grad():
            centre, spread = w.mean(), w.std()
        shifts = self.shifts.view(-1, *([1] * w.dim()))
        return binarize(w.unsqueeze(0) - centre + shifts * spread)

    def _factors(self, bases):
        """``alpha`` ``(M,)`` (fitted, no gradient), ``beta`` ``(K,)`` and the common scale
        ``2**f / max(alpha beta)`` (no gradient): ``c_mn = scale alpha_m beta_n`` before
        rounding."""
        alpha = fit_alpha(self.weight, bases.detach()).abs().clamp_min(1e-8)
        beta = (torch.ones(1) if self.log_beta is None else self.log_beta.exp())
        scale = (1 << self.fraction_bits) / (alpha.max() * beta.detach().max())
        return alpha, beta, scale

    def coefficients(self, bases=None):
        """``(M, K)`` coefficients ``c_mn``: integers (as floats) once quantized."""
        bases = self.weight_bases() if bases is None else bases
        alpha, beta, scale = self._factors(bases)
        c = alpha.view(-1, 1) * beta.view(1, -1) * scale
        if self.quantized:
            c = RoundSTE.apply(c).clamp(1, 1 << self.fraction_bits)
        return c

    def _product(self, x, weight):
        """One layer product of ``x`` (a batch of inputs) and ``weight`` (out first)."""
        return F.linear(x, weight)

    def integer(self, x, bases=None):
        """``Z`` per neuron: ``(B, out, ...)``, float64 and exact in eval mode once quantized.

        Before rounding, ``c`` is rank one (``c_mn = scale alpha_m beta_n``), so in training
        ``Z = scale (sum_m alpha_m B_m) . (sum_n beta_n H_n)``: one product, whatever M and K
        (same values and gradients as the sum of M K products). Otherwise the K input bases
        are stacked along the features, each against ``sum_m c_mn B_m``: one product K times
        as wide, in float32 where its integer sums stay below ``2**24`` (exact), else float64.
        """
        bases = self.weight_bases() if bases is None else bases
        if self.in_bits is not None:
            x = x.unsqueeze(1)                                  # pixels: one input "base"
        m, k = bases.shape[0], x.shape[1]
        extra = [1] * (bases.dim() - 1)
        if self.training and not self.quantized:
            alpha, beta, scale = self._factors(bases)
            weight = (alpha.view(m, *extra) * bases).sum(dim=0)
            inputs = (beta.view(1, k, *([1] * (x.dim() - 2))) * x).sum(dim=1)
            return self._product(inputs, weight) * scale
        c = self.coefficients(bases)
        combined = (c.T.reshape(k, m, *extra) * bases.unsqueeze(0)).sum(dim=1)   # (K, out, .)
        weight = combined.transpose(0, 1).flatten(1, 2)                      # (out, K*F|C, .)
        inputs = x.flatten(1, 2)
        top = (1 << self.in_bits) - 1 if self.in_bits is not None else 1
        exact = self.training or self.in_features * float(c.detach().sum()) * top < 2 ** 24
        if exact:
            z = self._product(inputs, weight)
        else:
            z = self._product(inputs.double(), weight.double())
        return z if self.training else z.double()

    def forward(self, x):
        bases = self.weight_bases()
        z = self.integer(x, bases)
        if not self.training:
            z = z.float()
        z = z * 2.0 ** -self.fraction_bits
        if self.in_bits is not None:
            z = z * self.scale
            if self.shift:
                # The input normalisation's shift: shift * sum_m c_m rowsum(B_m) per neuron.
                c = self.coefficients(bases)
                offset = (c[:, 0].view(-1, 1) * bases.flatten(2).sum(dim=2)).sum(dim=0)
                if z.dim() == 4:
                    offset = offset.view(1, -1, 1, 1)
                z = z + self.shift * 2.0 ** -self.fraction_bits * offset
        return z

    def clip_weights(self):
        with torch.no_grad():
            self.weight.clamp_(-1, 1)


class ABCConv2d(ABCLinear):
    """A convolution (stride 1, no padding) of M weight bases on K input bases ``(B, K, C, H,
    W)``, or on unsigned pixels ``(B, C, H, W)``; weights ``(O, C, k, k)`` as torch's."""

    def __init__(self, in_channels, out_channels, kernel, **options):
        super().__init__(in_channels * kernel * kernel, out_channels,
                         kernel_shape=(in_channels, kernel, kernel), **options)
        self.in_channels, self.kernel = in_channels, kernel

    def _product(self, x, weight):
        return F.conv2d(x, weight)


class ABCNet(nn.Module):
    """A multi-base network on unsigned pixels: ABC convolutions and dense layers, each with
    BatchNorm and N activation bases, max-pools of each base, an ABC output layer (see the
    module docstring).

    Inputs are ``(B, C * H * W)`` pixels in stream order, as for
    :class:`~bnnhw.train.model.BinaryNet`; between layers a tensor is ``(B, N, C, H, W)`` or
    ``(B, N, F)``: its N bases of +-1.

    Parameters
    ----------
    in_shape, in_bits, layers, classes
        ``(C, H, W)`` of a frame, bits per pixel, a layer specification
        (:func:`~bnnhw.train.model.parse_layers`), classes.
    weight_bases, act_bases : int
        M (every weight layer) and N (every hidden layer's output).
    fraction_bits : int
        ``f``: coefficients are ``1 .. 2**f`` once quantized.
    dropout, mean, std, momentum, eps
        As :class:`~bnnhw.train.model.BinaryNet`.
    """

    def __init__(self, in_shape, in_bits, layers, classes, *, weight_bases, act_bases,
                 fraction_bits=4, dropout=0.0, mean=0.0, std=1.0, momentum=0.1, eps=1e-5):
        super().__init__()
        for name, value, top in (("weight_bases", weight_bases, kinds.abc.MAX_BASES),
                                 ("act_bases", act_bases, 8), ("fraction_bits", fraction_bits,
                                                               12)):
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top:
                raise ValueError(f"{name} must be an integer in 1..{top}, not {value!r}")
        layers = parse_layers(layers)
        self.in_shape = tuple(int(d) for d in in_shape)
        self.in_features, self.in_bits, self.classes = math.prod(self.in_shape), in_bits, classes
        self.layers = layers
        self.weight_bases, self.act_bases = weight_bases, act_bases
        self.fraction_bits = fraction_bits
        self.linears, self.norms = nn.ModuleList(), nn.ModuleList()
        self.act_shifts = nn.ParameterList()
        # As BinaryNet: steps ("weight", index) or ("pool", size); shapes[n] the input of
        # step n, (C, H, W) while spatial, (F,) once flat.
        self.steps, self.shapes = [], []
        shape = self.in_shape if layers[0][0] == "conv" else (self.in_features,)
        k = None
        for kind, *values in layers:
            self.shapes.append(shape)
            options = dict(weight_bases=weight_bases, in_bases=k or 1,
                           fraction_bits=fraction_bits,
                           in_bits=in_bits if k is None else None, mean=mean, std=std)
            if kind == "pool":
                p = values[0]
                if len(shape) != 3 or p > min(shape[1:]):
                    raise LayerSpecError(f"a {p}x{p} pool does not fit the input {shape}")
                self.steps.append(("pool", p))
                shape = (shape[0], shape[1] // p, shape[2] // p)
                continue
            if kind == "conv":
                if len(shape) != 3:
                    raise LayerSpecError("conv layers must come before dense ones, not after")
                out, kernel = values
                c, h, w = shape
                if kernel > h or kernel > w:
                    raise LayerSpecError(f"a {kernel}x{kernel} kernel does not fit a {h}x{w} "
                                         f"input")
                layer = ABCConv2d(c, out, kernel, **options)
                norm = nn.BatchNorm2d(out, eps=eps, momentum=momentum)
                shape = (out, h - kernel + 1, w - kernel + 1)
            else:
                out = values[0]
                layer = ABCLinear(math.prod(shape), out, **options)
                norm = nn.BatchNorm1d(out, eps=eps, momentum=momentum)
                shape = (out,)
            self.steps.append(("weight", len(self.linears)))
            self.linears.append(layer)
            self.norms.append(norm)
            spread = torch.linspace(-1, 1, act_bases) if act_bases > 1 else torch.zeros(1)
            self.act_shifts.append(nn.Parameter(spread.clone()))
            k = act_bases
        self.shapes.append(shape)
        fan_in = math.prod(shape)
        self.output = ABCLinear(fan_in, classes, weight_bases=weight_bases, in_bases=k,
                                fraction_bits=fraction_bits)
        self.offset_unit = math.sqrt(fan_in) * (1 << fraction_bits)
        self.offset = nn.Parameter(torch.zeros(classes))
        self.log_temperature = nn.Parameter(torch.tensor(-0.5 * math.log(fan_in)))
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.binary = True

    @property
    def hidden(self):
        return tuple(layer.out_features for layer in self.linears)

    @property
    def quantized(self):
        return self.output.quantized

    @quantized.setter
    def quantized(self, value):
        for layer in [*self.linears, self.output]:
            layer.quantized = bool(value)

    def offsets(self):
        """Integer per-class offsets (rounded, straight-through)."""
        return RoundSTE.apply(self.offset * self.offset_unit)

    def _run(self, x, record=None):
        if len(self.shapes[0]) == 3:
            c, h, w = self.in_shape
            x = x.reshape(len(x), h, w, c).permute(0, 3, 1, 2)
        h = x
        pooled_already = False
        for index, (kind, value) in enumerate(self.steps):
            if kind == "pool":
                if pooled_already:
                    pooled_already = False
                    continue
                # Each base pooled on its own: the max of +-1 values, the OR of the bits.
                b, n = h.shape[:2]
                pooled = F.max_pool2d(h.flatten(0, 1), value)
                h = pooled.view(b, n, *pooled.shape[1:])
                if record is not None:
                    bits = ((h >= 0).to(torch.int64) << torch.arange(n).view(1, -1, 1, 1, 1)
                            ).sum(dim=1)
                    record.append((None, None, stream_order(bits.to(torch.uint8))))
                continue
            linear, norm = self.linears[value], self.norms[value]
            if value:
                h = self.dropout(h)
            if isinstance(linear, ABCConv2d) or linear.in_bits is not None:
                z = linear(h)
            else:
                z = linear(h.flatten(2))                    # torch's (C, H, W) order per base
            v = norm(z)
            following = self.steps[index + 1] if index + 1 < len(self.steps) else None
            if record is None and following is not None and following[0] == "pool":
                # Each bit is v - s_n >= 0, monotone in v: pooling v once gives the bits that
                # pooling each base gives, N times cheaper (the trace keeps both steps).
                v = F.max_pool2d(v, following[1])
                pooled_already = True
            shifts = self.act_shifts[value]
            distance = v.unsqueeze(1) - shifts.view(1, -1, *([1] * (v.dim() - 1)))  # (B, N, .)
            h = binarize(distance)
            if record is not None:
                distance = distance.movedim(1, -1)                            # (..., N)
                bits = (distance >= 0).to(torch.int64)
                values = (bits << torch.arange(self.act_bases)).sum(dim=-1)
                record.append((z, distance, stream_order(values.to(torch.uint8))))
        return self.dropout(h.flatten(2))

    def scores(self, h):
        """Integer class scores ``Z + offsets`` (exact in eval mode once quantized)."""
        z = self.output.integer(h)
        return z + self.offsets().to(z.dtype)

    def forward(self, x):
        return (self.scores(self._run(x)).float() * 2.0 ** -self.fraction_bits
                * self.log_temperature.exp())

    def trace(self, x):
        """``(z, v, bits, scores)`` as :meth:`BinaryNet.trace`, ``v`` here the distances
        ``BN(z) - s_n`` (``(..., N)``) and ``bits`` the N-bit values in stream order."""
        record = []
        h = self._run(x, record)
        zs, vs, bits = ([entry[k] for entry in record] for k in range(3))
        return zs, vs, bits, self.scores(h)

    def norm_of(self, step):
        kind, value = self.steps[step]
        return self.norms[value] if kind == "weight" else None

    def clip_weights(self):
        for layer in [*self.linears, self.output]:
            layer.clip_weights()


def _integers(tensor, what):
    values = tensor.detach().double().numpy()
    if not np.array_equal(values, np.round(values)):
        raise SelfCheckError(f"{what} are not integers: is the model quantized?")
    return values.astype(np.int64)


def _hwc(bits, shape):
    """Weight columns over torch's flattened ``(C, H, W)`` in stream order, per base."""
    c, h, w = shape
    m, out = bits.shape[:2]
    return bits.reshape(m, out, c, h, w).transpose(0, 1, 3, 4, 2).reshape(m, out, -1)


def export_abc(model, *, input_shape, labels=None, provenance=None):
    """Return the :class:`artifact.Network` (``abc`` and ``abc_conv`` layers, max-pools, an
    ``abc_output`` layer) that the quantized ``model`` computes in eval mode."""
    if not model.quantized:
        raise ValueError("the model's coefficients are not quantized; set model.quantized")
    if math.prod(input_shape) != model.in_features:
        raise ValueError(f"input shape {tuple(input_shape)} does not hold the model's "
                         f"{model.in_features} inputs")
    f = model.fraction_bits
    layers = []
    with torch.no_grad():
        for (kind, value), shape in zip(model.steps, model.shapes):
            if kind == "pool":
                layers.append(kinds.MaxPoolLayer(size=value))
                continue
            linear, norm = model.linears[value], model.norms[value]
            bases = linear.weight_bases()
            c = _integers(linear.coefficients(bases), f"layer {value}'s coefficients")
            bits = (bases > 0).numpy().astype(np.uint8)        # (M, out, F) or (M, O, C, k, k)
            conv = bits.ndim == 5
            bound = linear.in_features * int(c.sum()) * (
                (1 << linear.in_bits) - 1 if linear.in_bits is not None else 1)
            if linear.in_bits is not None:
                # z = a Z + const: a = scale 2**-f, const = shift 2**-f sum_m c_m rowsum(B_m)
                a = np.full(linear.out_features, linear.scale * 2.0 ** -f)
                rowsum = (2 * bits.astype(np.int64) - 1).reshape(*bits.shape[:2], -1).sum(-1)
                const = linear.shift * 2.0 ** -f * (c[:, 0:1] * rowsum).sum(axis=0)
            else:
                a = np.full(linear.out_features, 2.0 ** -f)
                const = np.zeros(linear.out_features)
            bn = _bn(norm)
            thresholds, invert = [], None
            for shift in model.act_shifts[value].detach().double().numpy():
                # v - s >= 0 is BatchNorm with beta - s, then sign.
                t, invert = fold_thresholds(**{**bn, "beta": bn["beta"] - shift}, a=a,
                                            c=const, low=-bound, high=bound + 1)
                thresholds.append(t)
            bits[:, invert] ^= 1
            thresholds = np.stack(thresholds, axis=1)
            if conv:
                layers.append(kinds.MultiBaseConvLayer(
                    weights=bits.transpose(0, 1, 3, 4, 2),     # (M, O, C, k, k) -> k, k, C
                    coefficients=c, thresholds=thresholds))
                continue
            if len(shape) == 3:
                bits = _hwc(bits, shape)                       # after a convolution or pool
            layers.append(kinds.MultiBaseLayer(weights=bits, coefficients=c,
                                               thresholds=thresholds))
        out = model.output
        bases = out.weight_bases()
        c = _integers(out.coefficients(bases), "the output layer's coefficients")
        offsets = _integers(model.offsets(), "output offsets")
        bits = (bases > 0).numpy().astype(np.uint8)
        if len(model.shapes[-1]) == 3:
            bits = _hwc(bits, model.shapes[-1])
        layers.append(kinds.MultiBaseOutputLayer(
            weights=bits, coefficients=c, offsets=offsets,
            scales=np.ones(model.classes, np.int64)))
    return artifact.network(input_shape=input_shape, input_bits=model.in_bits, layers=layers,
                            labels=labels, provenance=provenance)
