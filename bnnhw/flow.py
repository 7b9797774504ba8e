"""``bnnhw flow``: the main job, end to end, on the embedded default dataset.

Train a BNN on scikit-learn's bundled digits (or take a network file), export and self-check
it, write its Verilog, prove in Verilator on the whole test split, under random stalls, that
the hardware computes exactly what the golden model computes, and build a bitstream for a
board. Every artifact lands in one output folder; the closing table says what each step
measured, and the command fails if any step does.
"""

import sys
import time
from pathlib import Path

from . import artifact, datasets, golden
from .errors import BnnhwError
from .paths import output_dir

__all__ = ["run_flow"]


def _say(text):
    print(f"bnnhw flow: {text}", file=sys.stderr, flush=True)


def _train(out, dataset, seed, model):
    from .train import train as training
    path = out / "network.npz"
    config = training.Config(dataset=dataset, seed=seed, model=model, output=str(path))
    training.main_train(config)
    return path


def _simulate(net, top, verilog_path, x, stall, out):
    from .sim.bench import simulate
    expected = golden.run(net, x)
    model = top.performance
    return simulate(verilog_path, top.ports, x, expected.classes, expected.scores,
                    model=(model.initiation_interval, model.latency), engine="fast",
                    stall=stall, cache_dir=out / "verilator", log=_say,
                    image=top.image() if top.ports.image else None, offset=top.image_offset)


def run_flow(args):
    """Run the flow for parsed ``bnnhw flow`` arguments; return the exit code."""
    if not 0 <= args.stall < 1:
        raise BnnhwError(f"--stall must be a probability with 0 <= P < 1, not {args.stall}")
    out = output_dir(args.output)
    rows = []
    started = time.perf_counter()

    if args.network is None:
        _say(f"training {args.model or 'the default model'} on {args.dataset} "
             f"(seed {args.seed})")
        step = time.perf_counter()
        path = _train(out, args.dataset, args.seed, args.model)
        rows.append(("train", f"{path} ({time.perf_counter() - step:.0f} s)"))
    else:
        path = Path(args.network)
    net = artifact.load(path)
    x, y, data = datasets.frames_for(net, args.dataset, network=path)
    result = golden.run(net, x)
    accuracy = float((result.classes == y).mean())
    rows.append(("golden model", f"{100 * accuracy:.2f}% on {len(y)} {data.name} test images"))
    if "self_check" in net.provenance:
        check = net.provenance["self_check"]
        when = "at this export" if args.network is None else "when exported (provenance)"
        rows.append(("torch vs golden", f"{check.get('class_agreement', '?')} of "
                                        f"{check.get('frames', '?')} classes agree {when}"))

    from .folding import default_folding, folding_from_args, save_folding
    from .gateware.top import generate_verilog
    # The folding simulated is the folding built: the board's fastest that fits, by default.
    board = None
    memory = "block"
    if args.board != "none":
        from .boards.board import get_board
        board = get_board(args.board)
    if board is None:
        folding = folding_from_args(net, args, default=lambda: default_folding(net))
    else:
        from .boards.commands import board_options
        folding, memory = board_options(net, board, args)
    verilog_path = out / "bnn_top.v"
    top = generate_verilog(net, folding, verilog_path, memory=memory)
    performance = top.performance
    save_folding(out / "folding.json", net, folding,
                 cycles_per_frame=performance.initiation_interval)
    rows.append(("verilog", f"{verilog_path}, {performance.initiation_interval} cycles/frame "
                            f"(model)"))

    failed = []
    if args.sim:
        _say(f"simulating {len(x)} frames in Verilator with {100 * args.stall:.0f}% stalls")
        report = _simulate(net, top, verilog_path, x, args.stall, out)
        hardware = float((report.classes == y).mean()) if len(report.classes) == len(y) else 0
        measured = report.timing.interval if report.timing else None
        measured = f"{measured:g}" if measured is not None else "no"
        rows.append(("verilator", f"{len(report.mismatches)} mismatches in {report.frames} "
                                  f"frames, hardware {100 * hardware:.2f}%, "
                                  f"{measured} cycles/frame measured"))
        if not report.ok:
            failed.append("verilator")

    if board is not None:
        from .boards.build import build, format_result
        _say(f"building for the {board.title}")
        built = build(board, net, folding, out / f"build-{board.name}", memory=memory,
                      log=_say)
        print(format_result(built))
        rows.append((board.name, f"{built.bitstream}, Fmax {built.fmax_mhz:.1f} MHz "
                                  f"(clock {built.clock_mhz:g} MHz)"))
        if not built.timing_met:
            failed.append(board.name)

    rows.append(("total", f"{time.perf_counter() - started:.0f} s"))
    if board is not None:
        print()                         # after the build's own table
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if failed:
        print(f"bnnhw flow: FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
