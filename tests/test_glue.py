# amaranth: UnusedElaboratable=no
import random

import numpy as np
import pytest
from amaranth import ClockDomain, Module

from bnnhw.bits import words
from bnnhw.gateware.glue import WidthConverter
from bnnhw.testing import put_frames, simulate, stream_get


@pytest.mark.parametrize("elem_width,in_count,out_count,frame", [
    (1, 4, 4, 8), (1, 2, 8, 16), (3, 6, 2, 12), (1, 3, 2, 12), (8, 1, 5, 10), (1, 64, 1, 64),
])
@pytest.mark.parametrize("stalls", [False, True])
def test_keeps_order_and_last(elem_width, in_count, out_count, frame, stalls):
    rng = np.random.default_rng([elem_width, in_count, out_count])
    frames = rng.integers(0, 1 << elem_width, (5, frame))
    dut = WidthConverter(elem_width=elem_width, in_count=in_count, out_count=out_count)
    stall_in = random.Random(1) if stalls else None
    stall_out = random.Random(2) if stalls else None
    got = []

    async def producer(ctx):
        await put_frames(ctx, dut.i, frames, in_count, elem_width, rng=stall_in)

    async def consumer(ctx):
        for x in frames:
            beats = words(x, out_count, elem_width)
            for k, word in enumerate(beats):
                beat = await stream_get(ctx, dut.o, rng=stall_out)
                got.append((beat.data, beat.last))
                assert (beat.data, beat.last) == (word, k == len(beats) - 1)

    top = Module()          # a clock domain even when the converter is only wires
    top.domains.sync = ClockDomain()
    top.submodules.dut = dut
    simulate(top, producer, consumer)
    assert len(got) == frames.size // out_count


def test_rejects_bad_counts():
    with pytest.raises(TypeError, match=r"^in_count must be a positive integer, not 0$"):
        WidthConverter(elem_width=1, in_count=0, out_count=2)
