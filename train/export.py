"""Export a trained :class:`~bnnhw.train.model.BinaryNet` to a network file, and check it.

Floats become integers here, once (DESIGN.md section 2). Every binary neuron of the torch model
computes ``v = gamma * (z - mu) / sigma + beta`` with ``sigma = sqrt(var + eps)`` and emits
``+1`` iff ``v >= 0``, where ``z = a * d + c`` is affine in an integer ``d``:

- ``dense`` layers: ``d = 2 p - N`` (bipolar dot), ``a = alpha`` (1 without scaling), ``c`` the
  optional bias. With ``tau = (mu - beta sigma / gamma - c) / a``: gamma > 0 gives
  ``T = ceil((N + tau) / 2)``; gamma < 0 gives ``p <= floor((N + tau) / 2)``, stored by
  inverting the weight row with ``T = N - floor((N + tau) / 2)``; clipped to ``0 .. N + 1``.
- ``first`` layer: ``d = acc = sum_i w_i x_i`` on the raw integer inputs, ``a = alpha * scale``
  and ``c = alpha * shift * rowsum(w)`` (the input normalisation, :class:`FirstLinear`); gamma > 0
  gives ``T = ceil(tau)``, gamma < 0 an inverted row with ``T = -floor(tau)``; clipped to
  ``-A .. A + 1`` with ``A = N * (2**in_bits - 1)``.
- ``conv`` and ``first_conv`` layers: as ``dense`` and ``first``, per output channel, with
  ``N = k * k * C`` and ``d`` the dot product over a window; their weights are reordered from
  torch's ``(O, C, k, k)`` to the kinds' ``(O, k, k, C)``, and a dense layer after them from
  torch's flattened ``(C, H, W)`` to stream order. ``maxpool`` layers carry no numbers.
- gamma = 0 or a = 0: the output is the constant ``v(0) >= 0``: always (``T`` at the bottom of
  its range) or never (``N + 1``, ``A + 1``).

Thresholds are computed in float64 from the float32 parameters. Torch computes ``v`` in float32,
so the two can differ where ``v`` lies within float32 rounding of 0: :func:`self_check` counts
such disagreements ("ties") and fails on any other.
"""

import math

import numpy as np
import torch

from bnnhw import artifact, golden, kinds
from bnnhw.errors import BnnhwError

from .model import FirstConv2d, FirstLinear

__all__ = [
    "TIE_RTOL", "MAX_CLASS_DISAGREEMENT", "MAX_BIT_DISAGREEMENT", "SelfCheckError",
    "fold_thresholds", "export", "self_check", "format_report",
]

# A torch pre-activation v is "at a tie" when |v| <= TIE_RTOL * (|gamma| (|z| + |mu|) / sigma +
# |beta|): about 80 float32 units in the last place of the terms that make up v.
TIE_RTOL = 1e-5
# The self-check fails when more than this fraction of test frames get a different class from
# torch and from the golden model, or more than this fraction of hidden bits differ.
MAX_CLASS_DISAGREEMENT = 1e-3
MAX_BIT_DISAGREEMENT = 1e-3


class SelfCheckError(BnnhwError):
    """The exported network does not match the torch model it came from."""


def fold_thresholds(*, gamma, beta, mean, var, eps, a, c, low, high, dense_fan_in=None):
    """Fold BatchNorm + sign of ``z = a d + c`` into ``d``-thresholds, per neuron (float64).

    Parameters
    ----------
    gamma, beta, mean, var : array of float, shape (out,)
        BatchNorm weight, bias, running mean and running variance.
    eps : float
        BatchNorm epsilon.
    a, c : array of float, shape (out,)
        ``z = a * d + c``; ``a >= 0`` (``a = 0``: constant output).
    low, high : int
        Range of ``d``'s threshold: ``T = low`` means always 1, ``T = high`` never.
    dense_fan_in : int or None
        For a ``dense`` layer, its fan-in ``N``: ``d = 2 p - N`` and thresholds are on ``p``
        (``low = 0``, ``high = N + 1``); None for the ``first`` layer (thresholds on ``d``).

    Returns
    -------
    (thresholds, invert) : int64 array, bool array
        Neuron ``j`` emits 1 iff ``q >= thresholds[j]``, where ``q`` is ``p`` (or ``d``) computed
        with row ``j`` of the weights inverted when ``invert[j]``.
    """
    gamma, beta, mean, var, a, c = (np.asarray(v, dtype=np.float64)
                                    for v in (gamma, beta, mean, var, a, c))
    for name, value in (("gamma", gamma), ("beta", beta), ("running mean", mean),
                        ("running variance", var), ("scale", a), ("shift", c)):
        if not np.isfinite(value).all():
            raise SelfCheckError(f"BatchNorm {name} holds non-finite values; cannot export")
    if (a < 0).any():
        raise SelfCheckError(f"negative layer scale {a.min()} cannot be folded")
    sigma = np.sqrt(var + float(eps))
    constant = (gamma == 0) | (a == 0)
    safe_gamma = np.where(constant, 1.0, gamma)
    safe_a = np.where(constant, 1.0, a)
    tau = (mean - beta * sigma / safe_gamma - c) / safe_a
    if dense_fan_in is not None:
        tau = (dense_fan_in + tau) / 2
    # Clip before rounding: tau may be huge when gamma is tiny.
    tau = np.clip(tau, low - 2, high + 2)
    invert = (gamma < 0) & ~constant
    if dense_fan_in is not None:
        inverted = dense_fan_in - np.floor(tau)
    else:
        inverted = -np.floor(tau)
    t = np.where(invert, inverted, np.ceil(tau))
    always = gamma * (c - mean) / sigma + beta >= 0        # v at a = 0 (or any d if gamma = 0)
    t = np.where(constant, np.where(always, low, high), t)
    return np.clip(t, low, high).astype(np.int64), invert


def _bn(norm):
    return dict(gamma=norm.weight.detach().double().numpy(),
                beta=norm.bias.detach().double().numpy(),
                mean=norm.running_mean.detach().double().numpy(),
                var=norm.running_var.detach().double().numpy(), eps=norm.eps)


def _hwc_columns(weights, shape):
    """Dense weights over torch's flattened ``(C, H, W)`` reordered to stream order."""
    c, h, w = shape
    return weights.reshape(len(weights), c, h, w).transpose(0, 2, 3, 1).reshape(len(weights), -1)


def _weight_layer(model, linear, norm, shape):
    """The bnnhw layer of one weight layer of ``model`` whose input has ``shape``."""
    w = linear.weight.detach()
    bits = (w >= 0).numpy().astype(np.uint8)              # sign(0) = +1: bit 1
    alpha = linear.alpha()
    alpha = np.ones(w.shape[0]) if alpha is None else alpha.detach().double().numpy()
    conv = bits.ndim == 4
    if conv:
        bits = bits.transpose(0, 2, 3, 1)                 # (O, C, k, k) -> (O, k, k, C)
    elif len(shape) == 3:
        bits = _hwc_columns(bits, shape)                  # after a convolution or pool
    fan_in = linear.in_features
    if isinstance(linear, (FirstLinear, FirstConv2d)):
        rowsum = (2 * bits.reshape(len(bits), -1).astype(np.int64) - 1).sum(axis=1)
        bound = fan_in * ((1 << linear.in_bits) - 1)
        t, invert = fold_thresholds(**_bn(norm), a=alpha * linear.scale,
                                    c=alpha * linear.shift * rowsum, low=-bound, high=bound + 1)
        bits[invert] ^= 1
        kind = kinds.FirstConvLayer if conv else kinds.FirstLayer
        return kind(weights=bits, thresholds=t, in_bits=linear.in_bits)
    bias = getattr(linear, "bias", None)
    bias = np.zeros(w.shape[0]) if bias is None else bias.detach().double().numpy()
    t, invert = fold_thresholds(**_bn(norm), a=alpha, c=bias, low=0, high=fan_in + 1,
                                dense_fan_in=fan_in)
    bits[invert] ^= 1
    kind = kinds.ConvLayer if conv else kinds.DenseLayer
    return kind(weights=bits, thresholds=t)


def export(model, *, input_shape, labels=None, provenance=None):
    """Return the :class:`artifact.Network` that ``model`` (binary, eval mode) computes.

    ``model`` is a :class:`~bnnhw.train.model.BinaryNet`; ``input_shape`` the frame shape
    (its product must equal ``model.in_features``). The network is checked by
    :func:`artifact.network`, not yet compared with torch (see :func:`self_check`).
    """
    if math.prod(input_shape) != model.in_features:
        raise ValueError(f"input shape {tuple(input_shape)} does not hold the model's "
                         f"{model.in_features} inputs")
    layers = []
    with torch.no_grad():
        for (kind, value), shape in zip(model.steps, model.shapes):
            if kind == "pool":
                layers.append(kinds.MaxPoolLayer(size=value))
            else:
                layers.append(_weight_layer(model, model.linears[value], model.norms[value],
                                            shape))
        out = model.output
        offsets = out.offsets().detach()
        if not torch.equal(offsets, torch.round(offsets)):
            raise ValueError("output offsets are not integers: is the model binary?")
        bits = (out.weight.detach() >= 0).numpy().astype(np.uint8)
        if len(model.shapes[-1]) == 3:
            bits = _hwc_columns(bits, model.shapes[-1])
        layers.append(kinds.OutputLayer(weights=bits, offsets=offsets.numpy().astype(np.int64),
                                           scales=np.ones(out.out_features, np.int64)))
    return artifact.network(input_shape=input_shape, input_bits=model.in_bits, layers=layers,
                            labels=labels, provenance=provenance)


def _stream(values):
    """A ``(B, C, H, W)`` array in stream order ``(B, H * W * C)``; vectors as they are."""
    return values.transpose(0, 2, 3, 1).reshape(len(values), -1) if values.ndim == 4 else values


def _tie_mask(norm, z, v):
    """Where torch's BatchNorm output ``v`` (from ``z``) lies within float32 rounding of 0."""
    p = _bn(norm)
    if z.ndim == 4:                   # per channel of (B, C, H, W)
        p = {k: (np.asarray(x).reshape(1, -1, 1, 1) if np.ndim(x) else x) for k, x in p.items()}
    sigma = np.sqrt(p["var"] + p["eps"])
    z, v = z.astype(np.float64), v.astype(np.float64)
    magnitude = np.abs(p["gamma"]) * (np.abs(z) + np.abs(p["mean"])) / sigma + np.abs(p["beta"])
    if v.ndim == z.ndim + 1:
        # Multi-base: v holds the distances to each activation base's shift, (..., N); a value
        # is at a tie when any of its bases is.
        return (np.abs(v) <= TIE_RTOL * (magnitude[..., None] + np.abs(v))).any(axis=-1)
    return np.abs(v) <= TIE_RTOL * magnitude


def _trace(model, x, batch):
    """Torch eval-mode ``(z, v, bits, scores)`` for integer frames ``x``, batched, as numpy."""
    parts = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(x), batch):
            xb = torch.from_numpy(np.asarray(x[start:start + batch], dtype=np.float32))
            parts.append(model.trace(xb))
    layers = range(len(model.steps))
    join = lambda k, n: (None if parts[0][k][n] is None
                         else torch.cat([part[k][n] for part in parts]).numpy())
    z, v, bits = ([join(k, n) for n in layers] for k in range(3))
    return z, v, bits, torch.cat([part[3] for part in parts]).numpy()


def self_check(model, net, x, y, *, batch=2048, chunk=2048):
    """Compare torch eval mode with the golden model on frames ``x`` (labels ``y``).

    Returns a JSON-serialisable report: for every hidden layer the number of bits, the
    end-to-end mismatches (golden from pixels vs torch), the local mismatches (golden layer fed
    torch's own input bits), how many of those are ties, and how many torch values lie at a tie
    at all; output scores mismatched locally; class agreement; both accuracies. Raises
    :class:`SelfCheckError` (after nothing is written) when a local mismatch is not at a tie,
    a score differs, or class or bit disagreement exceeds :data:`MAX_CLASS_DISAGREEMENT` /
    :data:`MAX_BIT_DISAGREEMENT`. Frames are checked ``chunk`` at a time (a multi-base CNN's
    traces of 10,000 frames would take tens of GB).
    """
    x, y = np.asarray(x), np.asarray(y)
    report = {"frames": int(len(x)), "layers": [], "score_mismatches": 0,
              "class_agreement": 0}
    torch_right = golden_right = 0
    for start in range(0, len(x), chunk):
        part = _check_chunk(model, net, x[start:start + chunk], y[start:start + chunk], batch)
        if not report["layers"]:
            report["layers"] = [dict.fromkeys(entry, 0) for entry in part["layers"]]
        for total, entry in zip(report["layers"], part["layers"]):
            for key, value in entry.items():
                total[key] += value
        for key in ("score_mismatches", "class_agreement"):
            report[key] += part[key]
        torch_right += part["torch_right"]
        golden_right += part["golden_right"]
    report["torch_accuracy"] = torch_right / len(y) if len(y) else 0.0
    report["golden_accuracy"] = golden_right / len(y) if len(y) else 0.0
    problems = []
    for n, entry in enumerate(report["layers"]):
        if entry["local_mismatches"] != entry["local_ties"]:
            problems.append(f"layer {n}: {entry['local_mismatches'] - entry['local_ties']} "
                            f"activations differ away from a floating-point tie")
        if entry["mismatches"] > MAX_BIT_DISAGREEMENT * entry["bits"]:
            problems.append(f"layer {n}: {entry['mismatches']} of {entry['bits']} bits differ")
    if report["score_mismatches"]:
        problems.append(f"{report['score_mismatches']} output scores differ on equal inputs")
    disagree = len(x) - report["class_agreement"]
    if disagree > MAX_CLASS_DISAGREEMENT * len(x):
        problems.append(f"{disagree} of {len(x)} classes differ")
    if problems:
        raise SelfCheckError("torch and the golden model disagree: " + "; ".join(problems))
    return report


def _check_chunk(model, net, x, y, batch):
    """The counts of :func:`self_check` for frames ``x``."""
    z, v, torch_bits, torch_scores = _trace(model, x, batch)
    result = golden.run(net, x)
    layers = []
    for n, layer in enumerate(net.layers[:-1]):
        inputs = x if n == 0 else torch_bits[n - 1]
        local = layer.golden(inputs) != torch_bits[n]
        norm = model.norm_of(n)
        ties = (np.zeros(local.shape, bool) if norm is None
                else _stream(_tie_mask(norm, z[n], v[n])))
        layers.append({
            "bits": int(torch_bits[n].size),
            "mismatches": int((result.activations[n] != torch_bits[n]).sum()),
            "local_mismatches": int(local.sum()),
            "local_ties": int((local & ties).sum()),
            "near_ties": int(ties.sum()),
        })
    local_scores = net.layers[-1].golden(torch_bits[-1])
    torch_classes = torch_scores.argmax(axis=1)
    return {"layers": layers,
            "score_mismatches": int((local_scores != torch_scores.astype(np.int64)).sum()),
            "class_agreement": int((torch_classes == result.classes).sum()),
            "torch_right": int((torch_classes == y).sum()),
            "golden_right": int((result.classes == y).sum())}


def format_report(report):
    """Return the self-check report as a few short lines of text."""
    frames = report["frames"]
    bits = sum(layer["bits"] for layer in report["layers"])
    mismatches = sum(layer["mismatches"] for layer in report["layers"])
    local = sum(layer["local_mismatches"] for layer in report["layers"])
    ties = sum(layer["local_ties"] for layer in report["layers"])
    near = sum(layer["near_ties"] for layer in report["layers"])
    return "\n".join([
        f"accuracy     golden {100 * report['golden_accuracy']:.2f}%   "
        f"torch {100 * report['torch_accuracy']:.2f}%   ({frames:,} test frames)",
        f"classes      {report['class_agreement']:,} of {frames:,} agree "
        f"(torch vs golden)",
        f"hidden bits  {bits - mismatches:,} of {bits:,} agree; {local} differ locally "
        f"({ties} at ties; {near} values at a tie in all)",
    ])
