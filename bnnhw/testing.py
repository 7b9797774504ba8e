"""Helpers shared by bnnhw's tests and benches: stream drivers with random stalls, frame-level
runs of a component in Amaranth's simulator, throughput measurement, and random networks.

``stream_put``/``stream_get`` drive an Amaranth ``lib.stream`` interface from an
``add_testbench`` coroutine and obey the stream rules: a producer raises ``valid`` and holds it
with its payload until ``ready``; a consumer may drop ``ready`` at will. With ``rng`` (a
``random.Random``) each side idles for random cycles before a transfer, which is how every stream
in bnnhw is tested under backpressure.

:func:`run_frames` streams whole frames through a component with ``i``/``o`` streams and returns
what came out; :func:`result_times` and :func:`interval_and_latency` measure it unstalled.
"""

import random

import numpy as np
from amaranth.sim import Simulator

from . import artifact
from .bits import words

__all__ = ["stream_put", "stream_get", "FlashModel", "simulate", "put_frames", "run_frames", "unpack_bits",
           "unpack_results", "result_times", "interval_and_latency", "random_network",
           "random_inputs", "random_cnn", "instantiated_memories", "stage_interval",
           "random_abc_network", "random_abc_cnn"]


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


class FlashModel:
    """An SPI NOR flash for Amaranth's simulator: the commands bnnhw's flash reader uses.

    ``contents`` maps addresses to bytes (``{offset: data}``; elsewhere the flash reads
    ``0xFF``, as erased). SPI mode 0: it samples ``copi`` as ``sck`` rises and changes
    ``cipo`` after ``sck`` falls. ``0xAB`` releases it from deep power-down (in which it starts
    when ``asleep``: it then ignores everything else); ``0x03`` and a 24-bit address read from
    there on for as long as ``cs`` stays high. :meth:`run` is the testbench; ``reads`` counts
    the bytes read.
    """

    def __init__(self, pins, contents, *, asleep=False):
        self.pins, self.asleep, self.reads = pins, asleep, 0
        self.memory = {}
        for offset, data in contents.items():
            for k, byte in enumerate(bytes(data)):
                self.memory[offset + k] = byte

    async def run(self, ctx):
        pins = self.pins
        bits = value = sent = 0
        command = address = None
        sck = 0
        while True:
            await ctx.tick()
            if not ctx.get(pins.cs):
                bits = value = sent = 0
                command = address = None
                sck = ctx.get(pins.sck)
                continue
            now = ctx.get(pins.sck)
            if now and not sck and address is None:           # rising edge: a bit in
                value = (value << 1) | ctx.get(pins.copi)
                bits += 1
                if bits == 8:
                    command = value
                    if command == 0xAB:
                        self.asleep = False
                elif bits == 32 and command == 0x03 and not self.asleep:
                    address = value & 0xFFFFFF
            elif not now and sck and address is not None:     # falling edge: a bit out
                byte = self.memory.get((address + sent // 8) & 0xFFFFFF, 0xFF)
                ctx.set(pins.cipo, (byte >> (7 - sent % 8)) & 1)
                if sent % 8 == 7:
                    self.reads += 1
                sent += 1
            sck = now


def simulate(dut, *testbenches):
    """Run ``testbenches`` (``add_testbench`` coroutines) on ``dut`` with a 100 MHz clock until
    every one has returned."""
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for testbench in testbenches:
        sim.add_testbench(testbench)
    sim.run()


async def put_frames(ctx, stream, frames, count, width=1, *, rng=None):
    """Send each of ``frames`` into ``stream`` as beats of ``count`` elements of ``width`` bits
    (:func:`bnnhw.bits.words`), with ``last`` on each frame's final beat."""
    for x in frames:
        beats = words(x, count, width)
        for k, word in enumerate(beats):
            await stream_put(ctx, stream, {"data": word, "last": k == len(beats) - 1}, rng=rng)


def run_frames(dut, frames, *, count, width=1, beats=1, stalls=False, seed=0):
    """Stream ``frames`` into ``dut.i`` (``count`` elements of ``width`` bits per beat) and
    return, per frame, the list of ``beats`` payloads taken from ``dut.o``.

    With ``stalls``, both sides idle at random: the input with ``random.Random(seed)``, the
    output with ``random.Random(seed + 1)``.
    """
    stall_in = random.Random(seed) if stalls else None
    stall_out = random.Random(seed + 1) if stalls else None
    received = []

    async def producer(ctx):
        await put_frames(ctx, dut.i, frames, count, width, rng=stall_in)

    async def consumer(ctx):
        for _ in frames:
            received.append([await stream_get(ctx, dut.o, rng=stall_out) for _ in range(beats)])

    simulate(dut, producer, consumer)
    return received


def unpack_bits(received, lanes):
    """The bits of :func:`run_frames` output beats of ``lanes`` bits, as a ``(frames, beats *
    lanes)`` array; checks that ``last`` is set on each frame's final beat and only there."""
    bits = []
    for n, beats in enumerate(received):
        lasts = [int(beat.last) for beat in beats]
        if lasts != [0] * (len(beats) - 1) + [1]:
            raise AssertionError(f"frame {n}: last flags {lasts}")
        bits.append([(beat.data >> k) & 1 for beat in beats for k in range(lanes)])
    return np.array(bits, dtype=np.uint8).reshape(len(received), -1)


def unpack_results(received, classes):
    """``(scores, classes)`` arrays from :func:`run_frames` output of one result beat per frame
    (:func:`bnnhw.gateware.ports.result_layout`)."""
    scores = [[beat.scores[c] for c in range(classes)] for beat, in received]
    return np.array(scores, dtype=np.int64), np.array([beat.cls for beat, in received],
                                                      dtype=np.int64)


def result_times(dut, in_beats, results, *, last_only=False):
    """Feed ``in_beats`` beats into ``dut.i`` as fast as it takes them, with ``dut.o`` always
    ready, and return the cycles (from the start) of the first ``results`` output beats, or of
    those with ``last`` set when ``last_only``. The payload is whatever ``dut.i`` holds."""
    times = []

    async def producer(ctx):
        ctx.set(dut.i.valid, 1)
        for _ in range(in_beats):
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        ctx.set(dut.o.ready, 1)
        cycle = 0
        while len(times) < results:
            await ctx.tick()
            cycle += 1
            if ctx.get(dut.o.valid) and (not last_only or ctx.get(dut.o.payload.last)):
                times.append(cycle)

    simulate(dut, producer, consumer)
    return times


def interval_and_latency(top, frames):
    """Measure a :class:`~bnnhw.gateware.top.NetworkTop` fed ``frames`` frames without stalls:
    return the mean cycles between results over the second half of them (the pipeline is full
    by then) and the cycles from the first input beat to the first result."""
    times = result_times(top, frames * top.n_pixels // top.in_simd, frames)
    return float(np.diff(times[frames // 2:]).mean()), times[0]


def random_network(rng, sizes, *, input_bits=8, extreme=True, scales=False):
    """A random, valid :class:`~bnnhw.artifact.Network` with layer widths ``sizes``.

    ``sizes = [inputs, hidden..., classes]``. Thresholds are drawn around each layer's typical
    value so that outputs are not constant, and with ``extreme`` some neurons get the constant
    thresholds (0 and N + 1 for dense layers, the bounds for the first layer).
    """
    if len(sizes) < 3:
        raise ValueError(f"sizes needs inputs, at least one hidden layer and classes, "
                         f"not {sizes!r}")
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


def instantiated_memories(component):
    """``[(width, depth)]`` of every Amaranth memory in the elaborated design of
    ``component``: what the design really instantiates, to compare with a plan."""
    from amaranth.hdl import Fragment, Shape
    from amaranth.hdl._mem import MemoryInstance
    found = []

    def walk(fragment):
        if isinstance(fragment, MemoryInstance):
            found.append((Shape.cast(fragment._data.shape).width, fragment._data.depth))
        for child, _name, _src in fragment.subfragments:
            walk(child)

    walk(Fragment.get(component, None))
    return found


def stage_interval(stage, figures, frames=6):
    """Cycles between frames of a layer stage (``layer.engine(fold)``) fed back to back with
    its output always ready, over the second half of ``frames`` frames; ``figures`` are the
    layer's, giving its beats per frame."""
    in_beats = figures.input.size // figures.in_count
    out_beats = figures.output.size // figures.out_count if figures.output is not None else 1
    times = result_times(stage, frames * in_beats, frames * out_beats)
    ends = times[out_beats - 1::out_beats]
    return np.diff(ends[frames // 2:]).tolist()


def random_cnn(rng, input_shape, layers, classes, *, input_bits=8, extreme=True,
               scales=False):
    """A random, valid convolutional :class:`~bnnhw.artifact.Network`.

    ``input_shape`` is ``(C, H, W)``; ``layers`` a list of ``("conv2d", kh, kw, channels)``,
    ``("pool", size)`` or ``("fc", neurons)``; the first (a convolution or a fully connected
    layer) takes the unsigned input; an output layer of ``classes`` follows. Thresholds spread around
    their typical value, with ``extreme`` some at both ends of their range.
    """
    from .kinds import ConvLayer, DenseLayer, FirstConvLayer, FirstLayer, MaxPoolLayer
    from .tensor import Tensor
    tensor = Tensor(*input_shape, input_bits, "unsigned")
    built = []

    def thresholds(n, fan_in, unsigned):
        top = (1 << input_bits) - 1 if unsigned else 1
        if unsigned:
            bound = fan_in * top
            spread = max(1, int(np.sqrt(fan_in)) * top)
            t = rng.integers(-spread, spread + 1, n)
            low, high = -bound, bound + 1
        else:
            spread = max(1, int(np.sqrt(fan_in)))
            t = fan_in // 2 + rng.integers(-spread, spread + 1, n)
            low, high = 0, fan_in + 1
        if extreme and n >= 3:
            t[rng.integers(n)] = low
            t[rng.integers(n)] = high
        return np.clip(t, low, high)

    for spec in layers:
        unsigned = tensor.encoding == "unsigned"
        if spec[0] == "conv2d":
            _, kh, kw, out = spec
            w = rng.integers(0, 2, (out, kh, kw, tensor.channels), dtype=np.uint8)
            t = thresholds(out, kh * kw * tensor.channels, unsigned)
            layer = (FirstConvLayer(weights=w, thresholds=t, in_bits=input_bits) if unsigned
                     else ConvLayer(weights=w, thresholds=t))
            tensor = Tensor(out, tensor.height - kh + 1, tensor.width - kw + 1)
        elif spec[0] == "pool":
            layer = MaxPoolLayer(size=spec[1])
            tensor = Tensor(tensor.channels, tensor.height // spec[1], tensor.width // spec[1])
        else:
            w = rng.integers(0, 2, (spec[1], tensor.size), dtype=np.uint8)
            t = thresholds(spec[1], tensor.size, unsigned)
            layer = (FirstLayer(weights=w, thresholds=t, in_bits=input_bits) if unsigned
                     else DenseLayer(weights=w, thresholds=t))
            tensor = Tensor.vector(spec[1])
        built.append(layer)
    w = rng.integers(0, 2, (classes, tensor.size), dtype=np.uint8)
    s = rng.integers(1, 4, classes) if scales else np.ones(classes, np.int64)
    built.append(artifact.OutputLayer(weights=w, offsets=rng.integers(-3, 4, classes), scales=s))
    return artifact.network(input_shape=input_shape, input_bits=input_bits, layers=built,
                            provenance={"source": "bnnhw.testing.random_cnn"})


def random_abc_network(rng, sizes, *, weight_bases, act_bases, input_bits=8, extreme=True,
                       scales=False, coefficient_max=8):
    """A random, valid multi-base (ABC-Net) :class:`~bnnhw.artifact.Network`: an ``abc``
    layer on the unsigned input, ``abc`` hidden layers, an ``abc_output`` layer.

    ``weight_bases`` and ``act_bases`` are one M (and N) for all layers or a sequence with one
    per layer (``act_bases`` one per layer but the last). Coefficients are drawn from
    ``1..coefficient_max``; thresholds spread around 0, with ``extreme`` some at both ends of
    their range.
    """
    from .kinds.abc import MultiBaseLayer, z_bound
    from .kinds.abc_output import MultiBaseOutputLayer
    from .tensor import Tensor
    layers = len(sizes) - 1
    ms = [weight_bases] * layers if isinstance(weight_bases, int) else list(weight_bases)
    ns = [act_bases] * (layers - 1) if isinstance(act_bases, int) else list(act_bases)
    tensor = Tensor.vector(sizes[0], bits=input_bits, encoding="unsigned")
    built = []
    for n, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        m = ms[n]
        k = 1 if tensor.encoding == "unsigned" else tensor.bits
        w = rng.integers(0, 2, (m, fan_out, fan_in), dtype=np.uint8)
        c = rng.integers(1, coefficient_max + 1, (m, k))
        if n == layers - 1:
            s = rng.integers(1, 4, fan_out) if scales else np.ones(fan_out, np.int64)
            built.append(MultiBaseOutputLayer(weights=w, coefficients=c, scales=s,
                                              offsets=rng.integers(-5, 6, fan_out)))
            break
        probe = MultiBaseLayer(weights=w, coefficients=c,
                               thresholds=np.zeros((fan_out, 1), np.int64)).bind(tensor)
        bound = z_bound(probe)
        top = 1 if tensor.encoding == "bipolar" else (1 << input_bits) - 1
        spread = max(1, int(np.sqrt(fan_in)) * top * int(c.sum()))
        t = rng.integers(-spread, spread + 1, (fan_out, ns[n]))
        if extreme and fan_out * ns[n] >= 3:
            t.flat[rng.integers(t.size)] = -bound
            t.flat[rng.integers(t.size)] = bound + 1
        t = np.clip(t, -bound, bound + 1)
        built.append(MultiBaseLayer(weights=w, coefficients=c, thresholds=t))
        tensor = Tensor.vector(fan_out, bits=ns[n])
    return artifact.network(input_shape=(sizes[0],), input_bits=input_bits, layers=built,
                            provenance={"source": "bnnhw.testing.random_abc_network"})


def random_abc_cnn(rng, input_shape, input_bits, specs, classes):
    """A random, valid multi-base (ABC-Net) convolutional network on unsigned
    ``input_bits``-bit inputs of ``input_shape``: ``specs`` of ``("conv2d", M, O, kh, kw, N)``,
    ``("pool", p)`` and ``("fc", M, out, N)``; an abc_output layer of ``classes`` with M = 2
    closes it. Thresholds spread around 0, one at each end of its range per layer."""
    from .kinds import MaxPoolLayer, MultiBaseConvLayer, MultiBaseLayer, MultiBaseOutputLayer
    from .tensor import Tensor
    tensor = Tensor(*input_shape, input_bits, "unsigned")
    layers = []
    for spec in specs:
        k = 1 if tensor.encoding == "unsigned" else tensor.bits
        top = (1 << input_bits) - 1 if tensor.encoding == "unsigned" else 1
        if spec[0] == "pool":
            layers.append(MaxPoolLayer(size=spec[1]))
            tensor = Tensor(tensor.channels, tensor.height // spec[1],
                            tensor.width // spec[1], tensor.bits)
            continue
        if spec[0] == "conv2d":
            _, m, o, kh, kw, n = spec
            w = rng.integers(0, 2, (m, o, kh, kw, tensor.channels), dtype=np.uint8)
            fan_in = kh * kw * tensor.channels
        else:
            _, m, o, n = spec
            w = rng.integers(0, 2, (m, o, tensor.size), dtype=np.uint8)
            fan_in = tensor.size
        c = rng.integers(1, 5, (m, k))
        bound = fan_in * top * int(c.sum())
        spread = max(1, int(np.sqrt(fan_in)) * top * int(c.sum()) // 2)
        t = np.clip(rng.integers(-spread, spread + 1, (o, n)), -bound, bound + 1)
        t.flat[rng.integers(t.size)] = -bound
        t.flat[rng.integers(t.size)] = bound + 1
        if spec[0] == "conv2d":
            layers.append(MultiBaseConvLayer(weights=w, coefficients=c, thresholds=t))
            tensor = Tensor(o, tensor.height - kh + 1, tensor.width - kw + 1, n)
        else:
            layers.append(MultiBaseLayer(weights=w, coefficients=c, thresholds=t))
            tensor = Tensor.vector(o, n)
    layers.append(MultiBaseOutputLayer(
        weights=rng.integers(0, 2, (2, classes, tensor.size), dtype=np.uint8),
        coefficients=rng.integers(1, 4, (2, tensor.bits)), offsets=rng.integers(-4, 5, classes),
        scales=rng.integers(1, 3, classes)))
    return artifact.network(input_shape=input_shape, input_bits=input_bits, layers=layers,
                            provenance={"source": "bnnhw.testing.random_abc_cnn"})
