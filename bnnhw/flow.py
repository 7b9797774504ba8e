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

import numpy as np

from . import artifact, datasets, golden
from .errors import BnnhwError
from .paths import output_dir
from .progress import Progress

__all__ = ["run_flow"]


def _say(text):
    print(f"bnnhw flow: {text}", file=sys.stderr, flush=True)


def _train(out, dataset, seed, model, weight_bases=1, act_bases=1):
    from .train import train as training
    path = out / "network.npz"
    config = training.Config(dataset=dataset, seed=seed, model=model, output=str(path),
                             weight_bases=weight_bases, act_bases=act_bases)
    training.main_train(config)
    return path


def _simulate(net, top, verilog_path, x, stall, out):
    from .sim.bench import simulate
    expected = golden.run(net, x)
    model = top.performance
    return simulate(verilog_path, top.ports, x, expected.classes, expected.scores,
                    model=(model.initiation_interval, model.latency), engine="fast",
                    stall=stall, cache_dir=out / "verilator", log=_say,
                    image=top.image() if top.ports.image else None, offset=top.image_offset,
                    progress=Progress("bnnhw flow: frames in Verilator"))


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
        path = _train(out, args.dataset, args.seed, args.model, args.weight_bases,
                      args.act_bases)
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
    simulation = None
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
        from .report import sim_json
        simulation = sim_json(report, network=path, verilog=verilog_path, dataset=data.name,
                              split="test", labels=y, golden_classes=result.classes,
                              performance=performance)

    built = None
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

    seconds = time.perf_counter() - started
    rows.append(("total", f"{seconds:.0f} s"))
    flow = _document(out, path, net, data, accuracy, len(y), folding, performance,
                     verilog_path, simulation, built, seconds, not failed,
                     samples=_samples(y, result.classes,
                                      report.classes if args.sim else None))
    _write_reports(out, flow, net, x, y, result.classes)
    rows.append(("report", f"{out / 'report.html'}, {out / 'report.json'}"))
    if getattr(args, "json", False):
        from .report import dumps
        print(dumps(flow))
    else:
        if board is not None:
            print()                         # after the build's own table
        width = max(len(name) for name, _ in rows)
        for name, value in rows:
            print(f"{name:<{width}}  {value}")
    if failed:
        print(f"bnnhw flow: FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


# Test images shown in the report: the first of each class, up to this many.
_SAMPLES = 10


def _samples(labels, golden_classes, hardware_classes):
    first = {}
    for index, label in enumerate(labels):
        first.setdefault(int(label), index)
    indices = [first[label] for label in sorted(first)][:_SAMPLES]
    complete = hardware_classes is not None and len(hardware_classes) == len(golden_classes)
    return {"indices": indices, "golden": [int(golden_classes[k]) for k in indices],
            "hardware": [int(hardware_classes[k]) for k in indices] if complete else None}


def _document(out, path, net, data, accuracy, frames, folding, performance, verilog_path,
              simulation, built, seconds, ok, samples):
    from .report import document, performance_json
    history = net.provenance.get("history")
    build = None
    if built is not None:
        build = {"board": built.board.name, "bitstream": str(built.bitstream),
                 "clock_mhz": built.clock_mhz, "fmax_mhz": built.fmax_mhz,
                 "timing_met": built.timing_met,
                 "utilization": {name: {"used": used, "available": available}
                                 for name, (used, available) in built.utilization.items()}}
    return document("flow", output=str(out), network=str(path), dataset=data.name,
                    golden_accuracy=accuracy, test_frames=frames,
                    self_check=net.provenance.get("self_check"),
                    training={"epochs": history} if isinstance(history, list) else None,
                    folding=[fold.as_dict() for fold in folding],
                    performance=performance_json(performance), verilog=str(verilog_path),
                    simulation=simulation, build=build, seconds=seconds, ok=ok,
                    samples=samples)


def _confusion(classes, labels, count):
    confusion = np.zeros((count, count), np.int64)
    np.add.at(confusion, (labels, classes), 1)
    return confusion.tolist()


def _write_reports(out, flow, net, x, y, golden_classes):
    """report.json, and report.html if matplotlib is there (else one line saying so)."""
    from .report import render_html, write_html, write_json
    write_json(out / "report.json", flow)
    try:
        import matplotlib              # noqa: F401  (only to know that it is there)
    except ImportError:
        _say("report.html not written: it needs matplotlib (pip install -e \".[report]\")")
        return
    labels = list(net.labels) if net.labels else [str(c) for c in range(net.classes)]
    samples = flow["samples"]
    text = render_html(flow, confusion=_confusion(golden_classes, y, net.classes),
                       labels=labels, images=x[samples["indices"]], shape=net.input_shape,
                       golden=samples["golden"], hardware=samples["hardware"])
    write_html(out / "report.html", text)


def rebuild_report(folder, dataset=None):
    """``bnnhw report RUN_DIR``: write report.html again from a flow's report.json."""
    import json
    from .report import ReportError
    folder = Path(folder)
    try:
        flow = json.loads((folder / "report.json").read_text())
    except FileNotFoundError:
        raise ReportError(f"{folder}: no report.json (a folder written by bnnhw flow)") from None
    except json.JSONDecodeError as error:
        raise ReportError(f"{folder / 'report.json'}: invalid JSON ({error})") from None
    if not isinstance(flow, dict) or flow.get("command") != "flow":
        raise ReportError(f"{folder / 'report.json'}: not a bnnhw flow report")
    net = artifact.load(flow["network"])
    if dataset is None:
        if flow.get("dataset") != "digits":
            raise ReportError(f"{folder}: the flow ran on {flow.get('dataset')!r}; give its "
                              f"folder with --dataset")
        dataset = "digits"
    x, y, _ = datasets.frames_for(net, dataset, network=flow["network"])
    _write_reports(folder, flow, net, x, y, golden.run(net, x).classes)
    return folder / "report.html"
