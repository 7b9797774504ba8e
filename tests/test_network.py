# amaranth: UnusedElaboratable=no
import re

import numpy as np
import pytest

from bnnhw import golden, testing
from bnnhw.folding import FoldingError, LayerFolding, default_folding
from bnnhw.gateware.top import NetworkTop, generate_verilog


@pytest.mark.parametrize("sizes,input_bits,folding,in_simd", [
    ([12, 8, 6, 4], 4, [(2, 3), (3, 4), (2, 6)], 1),          # PE/SIMD neither divide
    ([10, 6, 6, 3], 5, [(6, 10), (6, 6), (3, 6)], 10),        # fully unfolded
    ([9, 7, 5, 2], 2, [(1, 1), (1, 1), (1, 1)], 3),           # fully folded, primes
    ([16, 12, 8, 10], 8, [(4, 4), (2, 12), (10, 2)], 8),
    ([20, 10, 10, 10, 5], 3, [(5, 4), (10, 5), (1, 10), (5, 5)], 5),
])
@pytest.mark.parametrize("stalls", [False, True])
@pytest.mark.parametrize("memory", ["block", "distributed"])
def test_matches_golden(sizes, input_bits, folding, in_simd, stalls, memory):
    rng = np.random.default_rng(sizes)
    net = testing.random_network(rng, sizes, input_bits=input_bits, scales=True)
    frames = testing.random_inputs(rng, net, 10)
    top = NetworkTop(net, folding, in_simd=in_simd, memory=memory)
    received = testing.run_frames(top, frames, count=in_simd, width=input_bits, stalls=stalls)
    scores, classes = testing.unpack_results(received, top.classes)
    expected = golden.run(net, frames)
    assert np.array_equal(scores, expected.scores)
    assert np.array_equal(classes, expected.classes)


@pytest.mark.parametrize("folding,in_simd", [
    ([(8, 16), (4, 8), (2, 64)], 16),         # II 128: layer 1
    ([(4, 64), (16, 16), (10, 4)], 4),        # II 16: input beats and layers 1, 2 tie
    ([(1, 8), (2, 64), (1, 32)], 8),          # II 512: the first layer
    ([(64, 64), (64, 64), (10, 64)], 64),     # II 11: the argmax unit, all else unfolded
])
def test_initiation_interval_matches_the_model(folding, in_simd):
    net = testing.random_network(np.random.default_rng(5), [64, 64, 64, 10], input_bits=5)
    top = NetworkTop(net, folding, in_simd=in_simd)
    interval, latency = testing.interval_and_latency(top, 8)
    model = top.performance
    assert abs(interval - model.initiation_interval) <= 0.02 * model.initiation_interval
    assert abs(latency - model.latency) <= 0.1 * model.latency


def test_default_folding_balances_layers():
    net = testing.random_network(np.random.default_rng(1), [64, 64, 64, 10], input_bits=5)
    folding = default_folding(net, target=32)
    assert folding == (LayerFolding(2, 64), LayerFolding(2, 64), LayerFolding(5, 4))
    top = NetworkTop(net, target=32)
    assert top.folding == folding and top.performance.initiation_interval == 32
    # The output stage needs classes + 1 = 11 cycles for its argmax whatever its folding, so
    # the least parallelism that reaches 11 is enough.
    assert default_folding(net, target=1) == (LayerFolding(64, 64), LayerFolding(64, 64),
                                              LayerFolding(1, 64))


@pytest.mark.parametrize("folding,in_simd,message", [
    ([(3, 8), (1, 1), (1, 1)], None,
     r"^layers\[0\]: pe 3 does not divide the 8 neurons; allowed: 1, 2, 4, 8$"),
    ([(1, 1), (1, 0), (1, 1)], None,
     r"^layers\[1\]: simd must be a positive integer, not 0$"),
    ([(1, 1), (1, 1)], None, r"^folding has 2 entries, but the network has 3 layers$"),
    ([(1, 1), (1, 1), (1, 2, 3)], None,
     r"^layers\[2\]: expected a \(pe, simd\) pair, not \(1, 2, 3\)$"),
    ([(1, 1), (1, 1), (1, 1)], 5, r"^in_simd 5 does not divide the 12 pixels; "
                                  r"allowed: 1, 2, 3, 4, 6, 12$"),
])
def test_rejects_bad_folding(folding, in_simd, message):
    net = testing.random_network(np.random.default_rng(0), [12, 8, 8, 4], input_bits=3)
    with pytest.raises(FoldingError, match=message):
        NetworkTop(net, folding, in_simd=in_simd)


def test_verilog_ports(tmp_path):
    net = testing.random_network(np.random.default_rng(2), [16, 8, 4], input_bits=5)
    model = generate_verilog(net, [(2, 4), (4, 8)], tmp_path / "bnn.v", in_simd=2).performance
    text = (tmp_path / "bnn.v").read_text()
    module = text[text.index("module bnn_top"):]
    module = module[:module.index("endmodule")]
    ports = {name: int(msb or 0) + 1 for direction, msb, name in
             re.findall(r"^\s*(input|output)\s+(?:\[(\d+):0\]\s+)?(\w+);", module, re.M)}
    top = NetworkTop(net, [(2, 4), (4, 8)], in_simd=2)
    assert ports == {"clk": 1, "rst": 1, "i__payload": 5 * 2 + 1, "i__valid": 1, "i__ready": 1,
                     "o__payload": top.cls_width + 4 * top.score_width, "o__valid": 1,
                     "o__ready": 1}
    assert "module bnn_top" in text
    assert model.initiation_interval == 16      # first layer: (8 / 2) * (16 / 4)
