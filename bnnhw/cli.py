"""The ``bnnhw`` command: one entry point, one subcommand per stage.

Subcommands import what they need lazily, so ``bnnhw info`` never imports torch (nor Amaranth,
unless ``--board`` asks for the fit estimate). Project errors (bad files, bad parameters) print
one line and exit 1; anything else is a bug and keeps its traceback.
"""

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

from . import __version__
from .boards import BOARDS
from .errors import BnnhwError
from .paths import output_path

__all__ = ["main"]


def _table(rows, headers):
    """Format rows as a plain text table; columns of numbers are right-aligned."""
    rows = [[str(cell) for cell in row] for row in rows]
    headers = [str(h) for h in headers]
    columns = list(zip(headers, *rows))
    widths = [max(map(len, column)) for column in columns]
    numeric = [all(re.fullmatch(r"-?[\d,.]+%?|-", c) for c in column[1:]) for column in columns]
    line = lambda cells: "  ".join(c.rjust(w) if r else c.ljust(w)
                                   for c, w, r in zip(cells, widths, numeric)).rstrip()
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def describe(net):
    """Rows describing each layer of ``net``: kind, tensors in and out, weight bits,
    accumulator width and a note, from each kind's own description."""
    rows = []
    for n, layer in enumerate(net.layers):
        out = layer.output.describe() if layer.output is not None else f"{layer.classes} scores"
        acc = layer.acc_bits()
        rows.append([n, layer.kind, layer.input.describe(), out, f"{layer.weight_bits:,}",
                     "-" if acc is None else acc, layer.notes()])
    return rows


def run_info(args):
    from . import artifact
    net = artifact.load(args.network)
    folding = memory = design = None
    if args.board is not None:
        # What `bnnhw build BOARD` would build, priced: checked before anything is printed.
        design = _board_design(net, args)
        folding, memory = design["folding"], design["memory"]
    elif any(getattr(args, name) is not None for name in ("pe", "simd", "target", "folding")):
        folding = _folding(args, net)           # checked before anything is printed
    if args.json:
        from .report import dumps, info_json
        performance = None
        if folding is not None:
            from .perf import performance as model
            performance = model(net, folding, memory=memory or "block")
        print(dumps(info_json(net, args.network, performance, board=design)))
        return 0
    c, h, w = net.input_shape
    shape = f"{h}x{w}" + (f"x{c}" if c > 1 else "")
    print(f"{args.network}: {len(net.layers)} layers, input {shape} of {net.input_bits}-bit "
          f"values, {net.classes} classes, {net.weight_bits():,} weight bits")
    print()
    print(_table(describe(net), ["layer", "kind", "in", "out", "weight bits", "acc bits",
                                 "notes"]))
    if folding is not None:
        from .perf import performance
        print()
        print("hardware model for this folding:")
        print(performance(net, folding, memory=memory or "block").table())
    if design is not None:
        print()
        print(_format_board_design(design))
    if net.provenance:
        print()
        print("provenance:")
        for key, value in sorted(net.provenance.items()):
            if isinstance(value, list):
                value = f"[{len(value)} entries]"
            elif isinstance(value, dict):
                value = json.dumps(value, separators=(", ", ": "))
                value = value if len(value) <= 80 else value[:76] + " ..."
            print(f"  {key}: {value}")
    return 0


def _board_design(net, args):
    """The design ``bnnhw build BOARD`` would build from ``args``, with its fit estimate:
    a dictionary (:func:`bnnhw.report.info_json` writes it as ``board``)."""
    from .boards.board import get_board
    from .boards.build import FitError, check_fit, estimate
    from .boards.commands import board_options
    board = get_board(args.board)
    folding, memory = board_options(net, board, args)
    need = estimate(net, folding, board, memory=memory)
    try:
        check_fit(net, folding, board, memory=memory)
        refused = None
    except FitError as error:
        refused = str(error)
    # Per resource: nextpnr's name, what reports call it, the estimate and what the FPGA has.
    resources = [(board.logic[0], board.resources.get(board.logic[0], "logic"), need.logic,
                  board.logic[1]),
                 (board.block_ram[0], "block RAMs", need.block_rams, board.block_ram[1])]
    if board.spram:
        resources.append((board.spram[0], "SPRAMs", need.sprams, board.spram[1]))
    return {"board": board, "folding": folding, "memory": tuple(memory), "estimate": need,
            "resources": resources, "refused": refused}


def _format_board_design(design):
    from .boards.build import LOGIC_BUDGET
    from .folding import format_folding
    board, need = design["board"], design["estimate"]
    lines = [f"on the {board.title}, as `bnnhw build {board.name}` builds it:",
             f"  {'folding (pe, simd)':<22} {format_folding(design['folding'])}",
             f"  {'memory':<22} {' '.join(design['memory'])}"]
    lines += [f"  {label:<22} about {used:,} of {available:,} ({100 * used / available:.0f}%)"
              for _, label, used, available in design["resources"]]
    if design["refused"] is not None:
        lines.append(f"  does not fit: {design['refused']}")
    elif need.logic > board.logic[1] * LOGIC_BUDGET:
        lines.append(f"  fits, above the {100 * LOGIC_BUDGET:.0f}% of the logic a default "
                     f"folding keeps to (room for the router)")
    return "\n".join(lines)


def run_eval(args):
    import numpy as np
    from . import artifact, datasets, golden
    net = artifact.load(args.network)
    x, y, data = datasets.frames_for(net, args.dataset, split=args.split, count=args.count,
                                     network=args.network)
    start = time.perf_counter()
    result = golden.run(net, x)
    elapsed = time.perf_counter() - start
    correct = int((result.classes == y).sum())
    confusion = np.zeros((net.classes, net.classes), np.int64)
    np.add.at(confusion, (y, result.classes), 1)
    if args.json:
        from .report import document, dumps
        print(dumps(document("eval", network=str(args.network), dataset=data.name,
                             split=args.split, frames=len(y), correct=correct,
                             accuracy=correct / max(len(y), 1),
                             frames_per_second=len(y) / max(elapsed, 1e-9),
                             confusion=confusion.tolist())))
        return 0
    print(f"{args.network} on {data.name} ({args.split}, {len(y)} images): golden accuracy "
          f"{100 * correct / len(y):.2f}% ({correct}/{len(y)}), "
          f"{len(y) / elapsed:,.0f} frames/s")
    if args.confusion:
        print()
        print(_table([[c, *confusion[c]] for c in range(net.classes)],
                     ["true\\pred", *range(net.classes)]))
    return 0


def _add_dataset_arguments(p, *, split=True, count=None):
    p.add_argument("--dataset", metavar="DATASET", default="digits",
                   help="'digits' or a directory of MNIST-style IDX files (default: %(default)s)")
    if split:
        p.add_argument("--split", choices=("train", "test"), default="test",
                       help="which part of the dataset (default: %(default)s)")
    p.add_argument("--count", metavar="N", type=int, default=count,
                   help="use only the first N images" + (" (default: %(default)s)" if count
                                                          else ""))


def _add_json_argument(p):
    p.add_argument("--json", action="store_true",
                   help="print one JSON object instead of text (keys: bnnhw/report.py)")


def _int_list(text):
    try:
        return [None if part.strip() == "-" else int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, one per layer (- for a layer without this "
            f"parameter), not {text!r}") from None


def _add_folding_arguments(p, default="layers balanced for a UP5K's block RAM bandwidth"):
    group = p.add_argument_group(f"folding (hardware parallelism; default: {default})")
    group.add_argument("--pe", metavar="N,N,...", type=_int_list,
                       help="neurons computed in parallel, one per layer (alone, the input "
                            "widths keep their default)")
    group.add_argument("--simd", metavar="N,N,...", type=_int_list,
                       help="input features per cycle, one per layer")
    group.add_argument("--target", metavar="CYCLES", type=int,
                       help="cycles per frame the default folding aims for")
    group.add_argument("--folding", metavar="FILE", type=Path,
                       help="a folding file, as bnnhw build and flow write (folding.json)")
    group.add_argument("--memory", metavar="STYLE,...", type=_word_list,
                       help="weight memories: block, distributed or spram (an iCE40 "
                            "UltraPlus's, loaded from flash at run time), one for all layers "
                            "or one per layer; patchable: what `bnnhw build --patchable` "
                            "builds")


def _word_list(text):
    return [part.strip() for part in text.split(",")]


def _folding(args, net):
    """The folding the folding options ask for, checked against ``net``."""
    from .folding import folding_from_args
    return folding_from_args(net, args)


def _memory(args, net, default="block"):
    """The memory styles ``--memory`` asks for, one per layer, checked against ``net``."""
    from .folding import memory_from_options
    return memory_from_options(net, args.memory, default=default)


def run_verilog(args):
    from . import artifact
    from .gateware.top import generate_verilog
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", args.name) or args.name in _VERILOG_WORDS:
        raise BnnhwError(f"--name {args.name!r} is not a usable Verilog module name (letters, "
                         f"digits and _, not starting with a digit, not a keyword)")
    net = artifact.load(args.network)
    folding = _folding(args, net)
    memory = _memory(args, net)
    output_path(args.output, "Verilog")
    try:
        top = generate_verilog(net, folding, args.output, name=args.name, memory=memory)
    except OSError as error:
        raise BnnhwError(f"{args.output}: cannot write ({error.strerror})") from None
    print(f"{args.output}: module {args.name}, ports {', '.join(top.ports.verilog_ports)}")
    if top.ports.image:
        print(f"weights in SPRAM: it loads a weight image of {len(top.image()):,} bytes from "
              f"flash offset 0x{top.image_offset:X} (`bnnhw build` writes it)")
    print()
    print(top.performance.table())
    return 0


# Verilog keywords a user might pick as a module name; Amaranth would escape them silently.
_VERILOG_WORDS = {"module", "endmodule", "input", "output", "inout", "wire", "reg", "assign",
                  "always", "begin", "end", "if", "else", "case", "function", "task", "logic",
                  "initial", "parameter", "localparam", "integer", "generate", "signed"}


def run_build(args):
    from .boards.commands import run_build
    return run_build(args)


def run_explore(args):
    from .boards.commands import run_explore
    return run_explore(args)


def run_program(args):
    from .boards.commands import run_program
    return run_program(args)


def run_host(args):
    from .boards.commands import run_run
    return run_run(args)


def run_flow(args):
    from .flow import run_flow
    return run_flow(args)


def run_report(args):
    from .flow import rebuild_report
    path = rebuild_report(args.folder, args.dataset)
    print(path)
    return 0


def run_import(args):
    from .importer.command import run_command
    return run_command(args)


def run_sim(args):
    from .sim.bench import run_command
    return run_command(args)


def _command(argv):
    """The subcommand named in ``argv``: its first word that is not an option."""
    return next((word for word in argv if not word.startswith("-")), None)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(
        prog="bnnhw", description="Binarized neural networks from PyTorch to open FPGAs.")
    parser.add_argument("--version", action="version", version=f"bnnhw {__version__}")
    commands = parser.add_subparsers(metavar="COMMAND", required=True)

    p = commands.add_parser("train", help="train a BNN, export a network file, check it")
    if _command(argv) == "train":     # its options come from train/, which imports torch
        from .train import train as training
        training.add_arguments(p)
        p.set_defaults(run=training.run_from_args)

    p = commands.add_parser("info", help="describe a network file; with folding options, "
                                         "its cycles per frame")
    p.add_argument("network", metavar="NETWORK", type=Path, help="network file (.npz)")
    p.add_argument("--board", metavar="BOARD", choices=sorted(BOARDS),
                   help="the design `bnnhw build BOARD` would build (the folding options "
                        "as there; else the fastest that fits), its memories and the fit "
                        "estimate against the FPGA, without building it")
    _add_json_argument(p)
    _add_folding_arguments(p)
    p.set_defaults(run=run_info)

    p = commands.add_parser("eval", help="golden-model accuracy of a network on a dataset")
    p.add_argument("network", metavar="NETWORK", type=Path, help="network file (.npz)")
    _add_dataset_arguments(p)
    p.add_argument("--confusion", action="store_true", help="print the confusion matrix")
    _add_json_argument(p)
    p.set_defaults(run=run_eval)

    p = commands.add_parser("verilog", help="write Verilog of a network's gateware")
    p.add_argument("network", metavar="NETWORK", type=Path, help="network file (.npz)")
    p.add_argument("-o", "--output", metavar="FILE", type=Path, required=True,
                   help="Verilog file to write")
    p.add_argument("--name", metavar="NAME", default="bnn_top",
                   help="top module name (default: %(default)s)")
    _add_folding_arguments(p)
    p.set_defaults(run=run_verilog)

    p = commands.add_parser("build", help="build a bitstream for a board")
    board_default = "the fastest that fits the board"
    p.add_argument("board", metavar="BOARD", choices=sorted(BOARDS),
                   help=f"one of: {', '.join(sorted(BOARDS))}")
    p.add_argument("network", metavar="NETWORK", type=Path, help="network file (.npz)")
    p.add_argument("--build-dir", metavar="DIR", type=Path,
                   help="where the bitstream and reports go (default: build/NETWORK-BOARD)")
    p.add_argument("--clock", metavar="MHZ", type=float,
                   help="clock to run at, made by the board's PLL (the fastest it makes up to "
                        "MHZ; default: the fastest that meets timing, found by trying)")
    p.add_argument("--baud", metavar="RATE", type=int, default=115200,
                   help="UART baud rate (default: %(default)s)")
    p.add_argument("--no-scores", action="store_true",
                   help="reply with the class only, not the class scores (default: the "
                        "scores too, when they fit the reply's 16 bits)")
    p.add_argument("--patchable", action="store_true",
                   help="keep every weight and threshold in block RAM (weights in SPRAM "
                        "where the board needs it), so that --reuse can write a retrained "
                        "network into this build's bitstream and weight image later")
    p.add_argument("--reuse", metavar="DIR", type=Path,
                   help="write NETWORK's weights and thresholds into the bitstream (and "
                        "weight image) of the patchable build in DIR, in seconds (same shape "
                        "and folding; no synthesis, no place and route)")
    p.add_argument("--seed", metavar="N", type=int,
                   help="nextpnr's placement seed (default: nextpnr's)")
    _add_folding_arguments(p, default=board_default)
    _add_json_argument(p)
    p.set_defaults(run=run_build)

    p = commands.add_parser("explore", help="build many foldings and seeds, report the Pareto "
                                            "front of frames/s against LUTs and block RAMs")
    p.add_argument("board", metavar="BOARD", help=f"one of: {', '.join(sorted(BOARDS))}")
    p.add_argument("network", metavar="NETWORK", type=Path, help="network file (.npz)")
    p.add_argument("--foldings", metavar="N", default="4",
                   help="foldings the fit estimate says fit, from the most folded to the "
                        "fastest (default: %(default)s)")
    p.add_argument("--seeds", metavar="N", default="1",
                   help="nextpnr seeds per folding, 1..N (default: %(default)s)")
    p.add_argument("--workers", metavar="N", default=str(os.cpu_count() or 1),
                   help="local worker processes, builds at once (default: %(default)s)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on the Dask cluster whose scheduler is at ADDRESS, e.g. "
                        "tcp://HOST:8786 (needs the explore extra)")
    p.add_argument("--retries", metavar="N", default="2",
                   help="runs again of a build whose worker died (default: %(default)s)")
    p.add_argument("--clock", metavar="MHZ", type=float,
                   help="clock nextpnr aims at (default: the board's fastest); the Fmax "
                        "reached gives the frames/s")
    p.add_argument("-o", "--output", metavar="DIR", type=Path,
                   help="where the table and plot go (default: build/explore/NETWORK-BOARD)")
    p.add_argument("--cache", metavar="DIR", type=Path,
                   help="results of finished builds, by content key (default: "
                        "~/.cache/bnnhw/explore)")
    p.add_argument("--write-folding", metavar="FILE", type=Path,
                   help="write the fastest design of the front as a folding file for "
                        "bnnhw build --folding")
    p.set_defaults(run=run_explore)

    p = commands.add_parser("program", help="load a bitstream (and its weight image) onto a "
                                            "board")
    p.add_argument("board", metavar="BOARD", choices=sorted(BOARDS),
                   help=f"one of: {', '.join(sorted(BOARDS))}")
    p.add_argument("bitstream", metavar="BITSTREAM", type=Path,
                   help="file written by `bnnhw build`")
    p.add_argument("--image", metavar="FILE", type=Path,
                   help="weight image to write to the board's flash (default: the one `bnnhw "
                        "build` wrote next to BITSTREAM, if any)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, do not run them")
    p.set_defaults(run=run_program)

    p = commands.add_parser("run", help="classify images on a board over a serial port")
    p.add_argument("network", metavar="NETWORK", type=Path,
                   help="the network file the board's bitstream was built from")
    p.add_argument("--port", metavar="PORT",
                   help="serial port, e.g. /dev/ttyUSB1 (default: the one port of a plugged-in "
                        "board, found by its USB ids)")
    p.add_argument("--board", metavar="BOARD", choices=sorted(BOARDS),
                   help="look for this board's port only (default: any bnnhw knows)")
    _add_dataset_arguments(p, split=False, count=100)
    p.add_argument("--baud", metavar="RATE", type=int, default=115200,
                   help="UART baud rate the bitstream was built for (default: %(default)s)")
    p.add_argument("--timeout", metavar="SECONDS", type=float, default=2.0,
                   help="wait this long for each reply (default: %(default)s)")
    p.add_argument("--build-dir", metavar="DIR", type=Path,
                   help="the folder `bnnhw build` wrote: its clock and cycles per frame give "
                        "the gateware's bound beside the link's")
    _add_json_argument(p)
    p.set_defaults(run=run_host)

    p = commands.add_parser("flow", help="the main job: train, check, simulate, build")
    p.add_argument("-o", "--output", metavar="DIR", type=Path, default=Path("runs/flow"),
                   help="folder for everything the flow writes (default: %(default)s)")
    p.add_argument("--network", metavar="NETWORK", type=Path,
                   help="start from this network file instead of training one")
    p.add_argument("--dataset", metavar="DATASET", default="digits",
                   help="'digits' or a directory of MNIST-style IDX files (default: %(default)s)")
    p.add_argument("--seed", metavar="N", type=int, default=0,
                   help="training seed (default: %(default)s)")
    p.add_argument("--model", metavar="NAME",
                   help="training preset, e.g. digits_cnn (default: digits for the digits)")
    p.add_argument("--weight-bases", metavar="M", type=int, default=1,
                   help="ABC-Net: binary weight bases per layer of the trained MLP "
                        "(default: %(default)s)")
    p.add_argument("--act-bases", metavar="N", type=int, default=1,
                   help="ABC-Net: binary activation bases per hidden layer "
                        "(default: %(default)s)")
    p.add_argument("--board", choices=[*sorted(BOARDS), "none"], default="icebreaker",
                   help="board to build a bitstream for (default: %(default)s)")
    p.add_argument("--stall", metavar="P", type=float, default=0.3,
                   help="probability of a stall per cycle on each side in simulation "
                        "(default: %(default)s)")
    p.add_argument("--no-sim", dest="sim", action="store_false",
                   help="skip the Verilator simulation")
    p.add_argument("--target", metavar="CYCLES", type=int,
                   help="cycles per frame of the folding to simulate and build (default: the "
                        "fastest that fits the board)")
    p.add_argument("--folding", metavar="FILE", type=Path,
                   help="the folding to simulate and build, from a folding file "
                        "(folding.json, as build and flow write)")
    _add_json_argument(p)
    p.set_defaults(run=run_flow)

    p = commands.add_parser("report", help="write a flow's report.html again from its folder")
    p.add_argument("folder", metavar="RUN_DIR", type=Path, help="a folder bnnhw flow wrote")
    p.add_argument("--dataset", metavar="DATASET",
                   help="the dataset the flow ran on (default: digits, if it was)")
    p.set_defaults(run=run_report)

    p = commands.add_parser("import", help="import a binarized QONNX / ONNX model (Brevitas, "
                                           "FINN), check it against the QONNX executor")
    from .importer.command import add_arguments as import_arguments
    import_arguments(p)
    p.set_defaults(run=run_import)

    p = commands.add_parser("sim", help="check the gateware in Verilator against the golden model")
    p.add_argument("network", metavar="NETWORK", type=Path, help="network file (.npz)")
    _add_dataset_arguments(p)
    p.add_argument("--stall", metavar="P", type=float, default=0.0,
                   help="probability of an input gap and of output backpressure per cycle "
                        "(default: %(default)s)")
    p.add_argument("--seed", metavar="N", type=int, default=1,
                   help="seed of the random stalls (default: %(default)s)")
    p.add_argument("--engine", choices=("auto", "cocotb", "fast"), default="auto",
                   help="cocotb bench, or C++ harness for large sets (default: %(default)s, "
                        "cocotb up to 2000 frames)")
    p.add_argument("--waves", metavar="FILE", type=Path,
                   help="write waveforms to FILE (.fst for FST, else VCD)")
    p.add_argument("--build-dir", metavar="DIR", type=Path,
                   help="cache of Verilator builds (default: ~/.cache/bnnhw/verilator)")
    p.add_argument("--verilog", metavar="FILE", type=Path,
                   help="write the Verilog that is simulated to FILE (default: a temporary "
                        "file)")
    p.add_argument("--in-simd", metavar="N", type=int,
                   help="pixels per input beat (default: the first layer's simd)")
    p.add_argument("--board", metavar="BOARD", choices=sorted(BOARDS),
                   help="simulate what `bnnhw build BOARD` builds: its default folding and "
                        "memories (weights in SPRAM are loaded from a flash model first)")
    _add_folding_arguments(p)
    _add_json_argument(p)
    p.set_defaults(run=run_sim)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except BnnhwError as error:
        parser.exit(1, f"bnnhw: error: {error}\n")
    except BrokenPipeError:             # `bnnhw info ... | head`: the reader left, so do we
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
