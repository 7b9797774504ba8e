"""ABC-Net training: multi-base MLPs whose eval-mode forward is what the ``abc`` kinds compute,
and their export.

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
  ``t 2**-f`` times them.

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
from .model import RoundSTE, binarize

__all__ = ["ABCNet", "ABCLinear", "export_abc", "spread_shifts", "fit_alpha"]


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
                 in_bits=None, mean=0.0, std=1.0):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.bases, self.in_bases, self.fraction_bits = weight_bases, in_bases, fraction_bits
        self.in_bits = in_bits
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
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
        shifted = w.unsqueeze(0) - centre + self.shifts.view(-1, 1, 1) * spread
        return binarize(shifted)

    def coefficients(self, bases=None):
        """``(M, K)`` coefficients ``c_mn``: integers (as floats) once quantized."""
        bases = self.weight_bases() if bases is None else bases
        alpha = fit_alpha(self.weight, bases.detach()).abs().clamp_min(1e-8)
        beta = (torch.ones(1) if self.log_beta is None else self.log_beta.exp())
        product = alpha.view(-1, 1) * beta.view(1, -1)
        c = product / product.detach().max() * (1 << self.fraction_bits)
        if self.quantized:
            c = RoundSTE.apply(c).clamp(1, 1 << self.fraction_bits)
        return c

    def integer(self, x, bases=None, c=None):
        """``Z`` per neuron: ``(B, out)``, float64 and exact when quantized, in eval mode."""
        bases = self.weight_bases() if bases is None else bases
        c = self.coefficients(bases) if c is None else c
        m, out, fan_in = bases.shape
        stacked = bases.reshape(m * out, fan_in)
        if self.in_bits is not None:
            d = F.linear(x, stacked).view(len(x), m, out)               # (B, M, out)
            weights = c[:, 0].view(1, m, 1)
            if not self.training:
                return (d.double() * weights.double()).sum(dim=1)
            return (d * weights).sum(dim=1)
        k = x.shape[1]
        d = F.linear(x.reshape(len(x) * k, fan_in), stacked).view(len(x), k, m, out)
        weights = c.T.reshape(1, k, m, 1)                                # c[m, n] at [n, m]
        if not self.training:
            return (d.double() * weights.double()).sum(dim=(1, 2))
        return (d * weights).sum(dim=(1, 2))

    def forward(self, x):
        bases = self.weight_bases()
        c = self.coefficients(bases)
        z = self.integer(x, bases, c)
        if not self.training:
            z = z.float()
        z = z * 2.0 ** -self.fraction_bits
        if self.in_bits is not None:
            z = z * self.scale
            if self.shift:
                # The input normalisation's shift: shift * sum_m c_m rowsum(B_m) per neuron.
                offset = (c[:, 0].view(-1, 1) * bases.sum(dim=2)).sum(dim=0)
                z = z + self.shift * 2.0 ** -self.fraction_bits * offset
        return z

    def clip_weights(self):
        with torch.no_grad():
            self.weight.clamp_(-1, 1)


class ABCNet(nn.Module):
    """A multi-base MLP on unsigned pixels: ABC layers with BatchNorm and N activation bases,
    an ABC output layer (see the module docstring).

    Parameters
    ----------
    in_features, in_bits, hidden, classes
        Pixels per frame, bits per pixel, hidden layer sizes, classes.
    weight_bases, act_bases : int
        M (every layer) and N (every hidden layer's output).
    fraction_bits : int
        ``f``: coefficients are ``1 .. 2**f`` once quantized.
    dropout, mean, std, momentum, eps
        As :class:`~bnnhw.train.model.BinaryNet`.
    """

    def __init__(self, in_features, in_bits, hidden, classes, *, weight_bases, act_bases,
                 fraction_bits=4, dropout=0.0, mean=0.0, std=1.0, momentum=0.1, eps=1e-5):
        super().__init__()
        for name, value, top in (("weight_bases", weight_bases, kinds.abc.MAX_BASES),
                                 ("act_bases", act_bases, 8), ("fraction_bits", fraction_bits,
                                                               12)):
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top:
                raise ValueError(f"{name} must be an integer in 1..{top}, not {value!r}")
        self.in_features, self.in_bits, self.classes = in_features, in_bits, classes
        self.hidden = tuple(hidden)
        self.weight_bases, self.act_bases = weight_bases, act_bases
        self.fraction_bits = fraction_bits
        self.linears, self.norms = nn.ModuleList(), nn.ModuleList()
        self.act_shifts = nn.ParameterList()
        fan_in, k = in_features, None
        for n, out in enumerate(self.hidden):
            self.linears.append(ABCLinear(fan_in, out, weight_bases=weight_bases,
                                          in_bases=k or 1, fraction_bits=fraction_bits,
                                          in_bits=in_bits if n == 0 else None, mean=mean,
                                          std=std))
            self.norms.append(nn.BatchNorm1d(out, eps=eps, momentum=momentum))
            spread = torch.linspace(-1, 1, act_bases) if act_bases > 1 else torch.zeros(1)
            self.act_shifts.append(nn.Parameter(spread.clone()))
            fan_in, k = out, act_bases
        self.output = ABCLinear(fan_in, classes, weight_bases=weight_bases, in_bases=k,
                                fraction_bits=fraction_bits)
        self.offset_unit = math.sqrt(fan_in) * (1 << fraction_bits)
        self.offset = nn.Parameter(torch.zeros(classes))
        self.log_temperature = nn.Parameter(torch.tensor(-0.5 * math.log(fan_in)))
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.steps = [("weight", n) for n in range(len(self.hidden))]
        self.binary = True

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
        h = x
        for n, (linear, norm) in enumerate(zip(self.linears, self.norms)):
            if n:
                h = self.dropout(h)
            z = linear(h)
            v = norm(z)
            distance = v.unsqueeze(-1) - self.act_shifts[n].view(1, 1, -1)    # (B, out, N)
            h = binarize(distance).transpose(1, 2)                               # (B, N, out)
            if record is not None:
                bits = (distance >= 0).to(torch.int64)
                values = (bits << torch.arange(self.act_bases)).sum(dim=-1)
                record.append((z, distance, values.to(torch.uint8)))
        return self.dropout(h)

    def scores(self, h):
        """Integer class scores ``Z + offsets`` (exact in eval mode once quantized)."""
        z = self.output.integer(h)
        return z + self.offsets().to(z.dtype)

    def forward(self, x):
        return (self.scores(self._run(x)).float() * 2.0 ** -self.fraction_bits
                * self.log_temperature.exp())

    def trace(self, x):
        """``(z, v, bits, scores)`` as :meth:`BinaryNet.trace`, ``v`` here the distances
        ``BN(z) - s_n`` ``(B, out, N)`` and ``bits`` the N-bit values."""
        record = []
        h = self._run(x, record)
        zs, vs, bits = ([entry[k] for entry in record] for k in range(3))
        return zs, vs, bits, self.scores(h)

    def norm_of(self, step):
        return self.norms[self.steps[step][1]]

    def clip_weights(self):
        for layer in [*self.linears, self.output]:
            layer.clip_weights()


def _integers(tensor, what):
    values = tensor.detach().double().numpy()
    if not np.array_equal(values, np.round(values)):
        raise SelfCheckError(f"{what} are not integers: is the model quantized?")
    return values.astype(np.int64)


def export_abc(model, *, input_shape, labels=None, provenance=None):
    """Return the :class:`artifact.Network` (``abc`` layers, an ``abc_output`` layer) that the
    quantized ``model`` computes in eval mode."""
    if not model.quantized:
        raise ValueError("the model's coefficients are not quantized; set model.quantized")
    if math.prod(input_shape) != model.in_features:
        raise ValueError(f"input shape {tuple(input_shape)} does not hold the model's "
                         f"{model.in_features} inputs")
    f = model.fraction_bits
    layers = []
    with torch.no_grad():
        for n, (linear, norm) in enumerate(zip(model.linears, model.norms)):
            bases = linear.weight_bases()
            c = _integers(linear.coefficients(bases), f"layer {n}'s coefficients")
            bits = (bases > 0).numpy().astype(np.uint8)                 # (M, out, F)
            bound = linear.in_features * int(c.sum()) * (
                (1 << linear.in_bits) - 1 if linear.in_bits is not None else 1)
            if linear.in_bits is not None:
                # z = a Z + const: a = scale 2**-f, const = shift 2**-f sum_m c_m rowsum(B_m)
                a = np.full(linear.out_features, linear.scale * 2.0 ** -f)
                rowsum = (2 * bits.astype(np.int64) - 1).sum(axis=2)       # (M, out)
                const = linear.shift * 2.0 ** -f * (c[:, 0:1] * rowsum).sum(axis=0)
            else:
                a = np.full(linear.out_features, 2.0 ** -f)
                const = np.zeros(linear.out_features)
            bn = _bn(norm)
            shifts = model.act_shifts[n].detach().double().numpy()
            thresholds, invert = [], None
            for s in shifts:
                # v - s >= 0 is BatchNorm with beta - s, then sign.
                t, invert = fold_thresholds(**{**bn, "beta": bn["beta"] - s}, a=a, c=const,
                                            low=-bound, high=bound + 1)
                thresholds.append(t)
            bits[:, invert] ^= 1
            layers.append(kinds.MultiBaseLayer(weights=bits, coefficients=c,
                                               thresholds=np.stack(thresholds, axis=1)))
        out = model.output
        bases = out.weight_bases()
        c = _integers(out.coefficients(bases), "the output layer's coefficients")
        offsets = _integers(model.offsets(), "output offsets")
        layers.append(kinds.MultiBaseOutputLayer(
            weights=(bases > 0).numpy().astype(np.uint8), coefficients=c, offsets=offsets,
            scales=np.ones(model.classes, np.int64)))
    return artifact.network(input_shape=input_shape, input_bits=model.in_bits, layers=layers,
                            labels=labels, provenance=provenance)
