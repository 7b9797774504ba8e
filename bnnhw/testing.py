"""Helpers shared by bnnhw's tests and benches: stream drivers with random stalls, and random
networks.

``stream_put``/``stream_get`` drive an Amaranth ``lib.stream`` interface from an
``add_testbench`` coroutine and obey the stream rules: a producer raises ``valid`` and holds it
with its payload until ``ready``; a consumer may drop ``ready`` at will. With ``rng`` (a
``random.Random``) each side idles for random cycles before a transfer, which is how every stream
in bnnhw is tested under backpressure.
"""

import numpy as np

from . import artifact

__all__ = ["stream_put", "stream_get", "random_network", "random_inputs"]


async def _idle(ctx, rng, p):
    while rng is not None and rng.random() < p:
        await ctx.tick()


async def stream_put(ctx, stream, payload, *, rng=None, p=0.3):
    """Transfer one ``payload`` into ``stream`` (we drive valid/payload, the DUT ready)."""
    await _idle(ctx, rng, p)
    ctx.set(stream.payload, payload)
    ctx.set(stream.valid, 1)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream, *, rng=None, p=0.3):
    """Receive one payload from ``stream`` (the DUT drives valid/payload, we drive ready)."""
    await _idle(ctx, rng, p)
    ctx.set(stream.ready, 1)
    payload, = await ctx.tick().sample(stream.payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload


def random_network(rng, sizes, *, input_bits=8, extreme=True, scales=False):
    """A random, valid :class:`~bnnhw.artifact.Network` with layer widths ``sizes``.

    ``sizes = [inputs, hidden..., classes]``. Thresholds are drawn around each layer's typical
    value so that outputs are not constant, and with ``extreme`` some neurons get the constant
    thresholds (0 and N + 1 for dense layers, the bounds for the first layer).
    """
    if len(sizes) < 3:
        raise ValueError(f"sizes needs inputs, at least one hidden layer and classes, not {sizes!r}")
    layers = []
    for n, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = rng.integers(0, 2, (fan_out, fan_in), dtype=np.uint8)
        if n == 0:
            bound = fan_in * ((1 << input_bits) - 1)
            spread = max(1, int(np.sqrt(fan_in)) * ((1 << input_bits) - 1))
            t = rng.integers(-spread, spread + 1, fan_out)
            if extreme and fan_out >= 3:
                t[rng.integers(fan_out)] = -bound
                t[rng.integers(fan_out)] = bound + 1
            t = np.clip(t, -bound, bound + 1)
            layers.append(artifact.FirstLayer(weights=w, thresholds=t, in_bits=input_bits))
        elif n < len(sizes) - 2:
            spread = max(1, int(np.sqrt(fan_in)))
            t = fan_in // 2 + rng.integers(-spread, spread + 1, fan_out)
            if extreme and fan_out >= 3:
                t[rng.integers(fan_out)] = 0
                t[rng.integers(fan_out)] = fan_in + 1
            t = np.clip(t, 0, fan_in + 1)
            layers.append(artifact.DenseLayer(weights=w, thresholds=t))
        else:
            offsets = rng.integers(-3, 4, fan_out)
            s = rng.integers(1, 4, fan_out) if scales else np.ones(fan_out, np.int64)
            layers.append(artifact.OutputLayer(weights=w, offsets=offsets, scales=s))
    return artifact.network(input_shape=(sizes[0],), input_bits=input_bits, layers=layers,
                            provenance={"source": "bnnhw.testing.random_network"})


def random_inputs(rng, net, count):
    """``count`` random frames of unsigned ``net.input_bits``-bit inputs."""
    return rng.integers(0, 1 << net.input_bits, (count, net.input_size), dtype=np.int64)
