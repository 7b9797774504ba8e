"""Results people can script and read: the JSON documents of ``--json``, and the flow's report.

Every command that takes ``--json`` prints one JSON object instead of its text, built from the
same objects as the text. Each object has ``"schema": "bnnhw"``, ``"version"`` (this module's
:data:`VERSION`; a key's meaning never changes within a version) and ``"command"``; the other
keys, per command, are in :data:`KEYS` (every one of them is always there; a value is ``null``
where it does not apply). Numbers are plain JSON numbers; accuracies are fractions (0..1).

``info``
    ``network`` (path), ``input`` (a tensor: ``shape`` [C, H, W], ``bits``, ``encoding``),
    ``classes``, ``weight_bits``, ``layers`` (each: ``index``, ``kind``, ``input``,
    ``output`` (a tensor, or null for scores), ``weight_bits``, ``acc_bits``, ``notes``),
    ``performance`` (null, or the model of the folding given: see below), ``board`` (null,
    or with ``--board`` the design a build would use: ``name``, ``folding`` (per layer its
    parameters), ``memory``, ``estimate`` (nextpnr resource -> {``used``, ``available``}),
    ``fits``, ``refused`` (null, or why the fit check refuses it)), ``provenance``.
``eval``
    ``network``, ``dataset``, ``split``, ``frames``, ``correct``, ``accuracy``,
    ``frames_per_second``, ``confusion`` (rows: true class, columns: golden class).
``sim``
    ``network``, ``verilog``, ``dataset``, ``split``, ``engine``, ``frames``, ``stall``,
    ``completed``, ``mismatches`` (a count), ``first_mismatches`` (up to 10, each ``frame``,
    ``expected_class``, ``got_class``), ``hardware_accuracy``, ``golden_accuracy``,
    ``cycles_per_frame`` (``measured``, ``model``, ``steady``, ``with_stalls``), ``latency``
    (``measured``, ``model``), ``simulation_seconds``, ``cycles_per_second``, ``performance``.
``build``
    ``board``, ``bitstream``, ``clock_mhz``, ``fmax_mhz``, ``timing_met``, ``utilization``
    (nextpnr resource -> {``used``, ``available``}), ``folding`` (per layer its
    parameters), ``cycles_per_frame``, ``frames_per_second`` (the gateware's bound at the
    clock), ``link_frames_per_second`` (the UART's bound), ``seconds``.
``run``
    ``network``, ``port``, ``images``, ``seconds``, ``images_per_second`` (end to end),
    ``board_accuracy``, ``golden_accuracy``, ``mismatches`` (a count),
    ``first_mismatches`` (up to 10: ``image``, ``golden_class``, ``board_class``),
    ``retries`` (error status -> count), ``bound_by`` (what limits the rate).
``explore``
    ``board``, ``network`` (path), ``network_digest`` (:func:`bnnhw.artifact.digest`),
    ``seeds``, ``foldings`` (designs swept), ``objectives`` (key -> ``"max"``/``"min"``),
    ``runner``, ``builds`` (run now), ``cached`` (read from the cache), ``failed``,
    ``seconds``, ``rows`` (one per build: ``key``, ``board``, ``folding`` (per layer its
    parameters), ``memory``, ``seed``, ``options``, ``cycles_per_frame``, ``fmax_mhz``,
    ``clock_mhz``, ``frames_per_second`` (at the Fmax), ``luts``, ``block_rams``, ``sprams``,
    ``worker``, ``seconds``, ``built``, ``error`` (null, or why the build failed)), ``front``
    (indices of ``rows`` on the Pareto front), ``chosen`` (the front's fastest, or null).
``flow``
    ``output`` (its folder), ``network``, ``dataset``, ``golden_accuracy``, ``test_frames``,
    ``self_check`` (null, or the training self-check), ``training`` (null, or ``epochs``:
    a list of the per-epoch records), ``folding`` (per layer its parameters),
    ``performance``, ``verilog``, ``simulation`` (null, or the ``sim`` keys), ``build`` (null,
    or ``board``, ``bitstream``, ``clock_mhz``, ``fmax_mhz``, ``timing_met``,
    ``utilization``: resource -> {``used``, ``available``}), ``seconds``, ``ok``,
    ``samples`` (the test images the report shows: ``indices``, their ``golden`` classes and
    ``hardware`` classes, null if not simulated).

``import``
    ``model`` (the ONNX file), ``network`` (the file written), ``layers`` (each: ``index``,
    ``kind``, ``input``, ``output``), ``input_bits``, ``input_divisor`` (the model takes
    ``pixel / input_divisor``), ``dataset`` (a name, or ``"random"``), ``split`` (null for
    random frames), ``frames``, ``agreeing`` (frames whose classes the QONNX executor and the
    golden model agree on), ``class_agreement`` (a fraction), ``layer_bits`` (per layer whose
    bits the graph has: ``layer``, ``kind``, ``bits``, ``agreeing``), ``differences`` (up to
    10: ``frame``, ``executor_class``, ``golden_class``, ``layer`` and ``value`` of the first
    differing bit or null, ``explanation``), ``float_ties`` (popcounts of one class whose
    float scores round together), ``seconds``.

A ``performance`` object: ``initiation_interval`` (cycles/frame), ``latency``,
``memory_bits``, ``bottleneck``, ``layers`` (each: ``kind``, ``folding``, ``cycles``,
``depth``, ``memory_bits``).

``bnnhw flow`` writes ``report.json`` (its ``flow`` document) and ``report.html`` (training
curves, confusion matrix, per-layer folding, cycles and memory, resources against the board,
Fmax against the clock, the simulation, test images with golden and hardware classes: one
file, plots embedded as SVG, no script, no external reference); ``bnnhw report RUN_DIR``
writes ``report.html`` again from a flow's folder.
"""

import html
import io
import json
import os
from pathlib import Path

import numpy as np

from .errors import BnnhwError

__all__ = ["VERSION", "KEYS", "document", "tensor_json", "performance_json", "info_json",
           "sim_json", "write_json", "render_html", "write_html", "ReportError"]

VERSION = 1

KEYS = {
    "info": ("network", "input", "classes", "weight_bits", "layers", "performance", "board",
             "provenance"),
    "eval": ("network", "dataset", "split", "frames", "correct", "accuracy",
             "frames_per_second", "confusion"),
    "sim": ("network", "verilog", "dataset", "split", "engine", "frames", "stall", "completed",
            "mismatches", "first_mismatches", "hardware_accuracy", "golden_accuracy",
            "cycles_per_frame", "latency", "simulation_seconds", "cycles_per_second",
            "performance"),
    "build": ("board", "bitstream", "clock_mhz", "fmax_mhz", "timing_met", "utilization",
              "folding", "cycles_per_frame", "frames_per_second", "link_frames_per_second",
              "seconds"),
    "patch": ("board", "network", "bitstream", "reused", "memories", "seconds"),
    "run": ("network", "port", "images", "seconds", "images_per_second", "board_accuracy",
            "golden_accuracy", "mismatches", "first_mismatches", "retries", "bound_by"),
    "import": ("model", "network", "layers", "input_bits", "input_divisor", "dataset", "split",
               "frames", "agreeing", "class_agreement", "layer_bits", "differences",
               "float_ties", "seconds"),
    "explore": ("board", "network", "network_digest", "seeds", "foldings", "objectives",
                "runner", "builds", "cached", "failed", "seconds", "rows", "front", "chosen"),
    "flow": ("output", "network", "dataset", "golden_accuracy", "test_frames", "self_check",
             "training", "folding", "performance", "verilog", "simulation", "build",
             "seconds", "ok", "samples"),
}


class ReportError(BnnhwError):
    """A run folder without what a report needs."""


def document(command, **fields):
    """A JSON document of ``command``: the schema header and ``fields`` (all of KEYS)."""
    missing = [key for key in KEYS.get(command, ()) if key not in fields]
    if missing:
        raise ValueError(f"{command} document lacks {', '.join(missing)}")
    return {"schema": "bnnhw", "version": VERSION, "command": command, **fields}


def tensor_json(tensor):
    return None if tensor is None else tensor.as_json()


def performance_json(performance):
    """The ``performance`` object of a :class:`~bnnhw.perf.Performance`."""
    if performance is None:
        return None
    return {
        "initiation_interval": performance.initiation_interval,
        "latency": performance.latency, "memory_bits": performance.memory_bits,
        "bottleneck": performance.bottleneck(),
        "layers": [{"kind": layer.kind, "folding": layer.fold.as_dict(), "cycles": layer.cycles,
                    "depth": layer.depth, "memory_bits": layer.memory_bits}
                   for layer in performance.layers],
    }


def info_json(net, path, performance=None, board=None):
    """The ``info`` document of ``net`` (read from ``path``); ``board``: the design a board
    build would use (``bnnhw info --board``), with its fit estimate."""
    layers = [{"index": n, "kind": layer.kind, "input": tensor_json(layer.input),
               "output": tensor_json(layer.output), "weight_bits": layer.weight_bits,
               "acc_bits": layer.acc_bits(), "notes": layer.notes()}
              for n, layer in enumerate(net.layers)]
    return document("info", network=str(path), input=tensor_json(net.input),
                    classes=net.classes, weight_bits=net.weight_bits(), layers=layers,
                    performance=performance_json(performance),
                    board=None if board is None else board_design_json(board),
                    provenance=net.provenance)


def board_design_json(design):
    """The ``board`` entry of an ``info`` document."""
    return {"name": design["board"].name, "folding": [fold.as_dict() for fold in design["folding"]],
            "memory": list(design["memory"]),
            "estimate": {name: {"used": used, "available": available}
                         for name, _, used, available in design["resources"]},
            "fits": design["refused"] is None, "refused": design["refused"]}


def sim_json(report, *, network, verilog, dataset, split, labels=None, golden_classes=None,
             performance=None):
    """The ``sim`` document of a :class:`~bnnhw.sim.bench.Report`."""
    t = report.timing
    accuracy = lambda classes: (float((np.asarray(classes) == np.asarray(labels)).mean())
                                if labels is not None and len(labels) and report.completed
                                else None)
    seconds = max(report.sim_seconds, 1e-9)
    return document(
        "sim", network=str(network), verilog=str(verilog), dataset=dataset, split=split,
        engine=report.engine, frames=report.frames, stall=report.stall,
        completed=report.completed,
        mismatches=len(report.mismatches) + len(report.timing_mismatches),
        first_mismatches=[{"frame": m.frame, "expected_class": m.expected_class,
                           "got_class": m.got_class}
                          for m in (report.timing_mismatches + report.mismatches)[:10]],
        hardware_accuracy=accuracy(report.classes),
        golden_accuracy=accuracy(golden_classes) if golden_classes is not None else None,
        cycles_per_frame=None if t is None else {
            "measured": t.interval, "model": report.model_interval, "steady": t.steady,
            "with_stalls": t.stalled_interval},
        latency=None if t is None else {"measured": t.latency, "model": report.model_latency},
        simulation_seconds=report.sim_seconds, cycles_per_second=report.cycles / seconds,
        performance=performance_json(performance))


def _finite(value):
    """JSON has no NaN: floats that are not finite become null."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return _finite(float(value))
    return value


def dumps(doc):
    return json.dumps(_finite(doc), indent=1, allow_nan=False)


def write_json(path, doc):
    """Write ``doc`` to ``path`` atomically."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(dumps(doc) + "\n")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


# ---- the HTML report --------------------------------------------------------------------------

def _svg(figure):
    """A matplotlib figure as inline SVG (text drawn as paths: no fonts to fetch)."""
    import matplotlib.pyplot as plt
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def _figure(width=6.0, height=3.2):
    import matplotlib
    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "path"
    matplotlib.rcParams["svg.hashsalt"] = "bnnhw"         # the same page for the same run
    import matplotlib.pyplot as plt
    return plt.subplots(figsize=(width, height))


def _training_plot(epochs):
    figure, ax = _figure()
    x = [e["epoch"] for e in epochs]
    ax.plot(x, [100 * e["train_accuracy"] for e in epochs], label="train (torch)")
    ax.plot(x, [100 * e["test_accuracy"] for e in epochs], label="test (torch)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    loss = ax.twinx()
    loss.plot(x, [e["loss"] for e in epochs], color="grey", linestyle=":", label="loss")
    loss.set_ylabel("training loss")
    lines = ax.get_legend_handles_labels()
    more = loss.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="center right")
    return _svg(figure)


def _confusion_plot(confusion, labels):
    figure, ax = _figure(4.6, 4.0)
    image = ax.imshow(confusion, cmap="Blues")
    ax.set_xlabel("golden class")
    ax.set_ylabel("true class")
    ticks = range(len(confusion))
    ax.set_xticks(ticks, labels, rotation=90 if max(map(len, labels)) > 2 else 0)
    ax.set_yticks(ticks, labels)
    top = max(1, int(np.max(confusion)))
    for i in ticks:
        for j in ticks:
            if confusion[i][j]:
                ax.text(j, i, str(confusion[i][j]), ha="center", va="center", fontsize=7,
                        color="white" if confusion[i][j] > top / 2 else "black")
    figure.colorbar(image, ax=ax, shrink=0.8)
    return _svg(figure)


def _cycles_plot(performance):
    figure, ax = _figure(6.0, 0.45 * len(performance["layers"]) + 1.2)
    names = [f"{n} {layer['kind']}" for n, layer in enumerate(performance["layers"])]
    cycles = [layer["cycles"] for layer in performance["layers"]]
    ax.barh(names[::-1], cycles[::-1], color="#4878a8")
    ax.axvline(performance["initiation_interval"], color="#c44", linestyle="--",
               label=f"initiation interval {performance['initiation_interval']:,}")
    ax.set_xlabel("cycles per frame")
    ax.legend(loc="lower right")
    return _svg(figure)


def _resources_plot(build):
    rows = [(name, value["used"], value["available"])
            for name, value in build["utilization"].items() if value["available"]]
    figure, ax = _figure(6.0, 0.5 * len(rows) + 1.2)
    names = [name for name, _, _ in rows][::-1]
    shares = [100 * used / available for _, used, available in rows][::-1]
    ax.barh(names, [100] * len(rows), color="#e8e8e8")
    ax.barh(names, shares, color=["#c44" if s > 90 else "#4878a8" for s in shares])
    for y, (_, used, available) in enumerate(rows[::-1]):
        ax.text(101, y, f"{used:,} / {available:,}", va="center", fontsize=8)
    ax.set_xlim(0, 130)
    ax.set_xlabel("% of the FPGA")
    return _svg(figure)


def _clock_plot(build):
    figure, ax = _figure(6.0, 1.4)
    ax.barh(["Fmax"], [build["fmax_mhz"]], color="#4878a8" if build["timing_met"] else "#c44")
    ax.axvline(build["clock_mhz"], color="black", linestyle="--",
               label=f"clock {build['clock_mhz']:g} MHz")
    ax.set_xlabel("MHz")
    ax.legend(loc="lower right")
    return _svg(figure)


def _images_plot(images, shape, golden, hardware, labels):
    c, h, w = shape
    count = len(images)
    figure, axes = _figure(1.3 * count, 1.7)
    figure.clf()
    for k, image in enumerate(images):
        ax = figure.add_subplot(1, count, k + 1)
        pixels = np.asarray(image).reshape(h, w, c)
        ax.imshow(pixels[:, :, 0] if c == 1 else pixels / max(1, pixels.max()),
                  cmap="gray_r" if c == 1 else None, interpolation="nearest")
        hw = "-" if hardware is None else labels[int(hardware[k])]
        ax.set_title(f"golden {labels[int(golden[k])]}\nhardware {hw}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    return _svg(figure)


def _table(rows, header):
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


_STYLE = """
body { font-family: sans-serif; max-width: 980px; margin: 2em auto; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
th { background: #f3f3f3; } .ok { color: #080; } .bad { color: #c00; font-weight: bold; }
figure { margin: 0.5em 0; } svg { max-width: 100%; height: auto; }
"""


def render_html(flow, *, confusion, labels, images=None, shape=None, golden=None,
                hardware=None):
    """The flow's report as one HTML page (see the module docstring).

    ``flow`` is the ``flow`` document; ``confusion`` the golden confusion matrix on the test
    set; ``images`` a few test images (stream order) of ``shape`` with their ``golden`` and
    ``hardware`` classes.
    """
    verdict = "passed" if flow["ok"] else "FAILED"
    parts = [f"<h1>bnnhw flow: {html.escape(str(flow['network']))}</h1>",
             f"<p class=\"{'ok' if flow['ok'] else 'bad'}\">The flow {verdict}: golden accuracy "
             f"{100 * flow['golden_accuracy']:.2f}% on {flow['test_frames']:,} "
             f"{html.escape(flow['dataset'])} test images, {flow['seconds']:.0f} s.</p>"]

    parts.append("<h2>Training</h2>")
    epochs = (flow.get("training") or {}).get("epochs")
    if epochs:
        parts.append(f"<figure>{_training_plot(epochs)}</figure>")
    else:
        parts.append("<p>The network was not trained by this flow, and its file holds no "
                     "training history.</p>")
    check = flow.get("self_check")
    if check:
        parts.append(f"<p>Torch against the golden model on the test set: "
                     f"{check['class_agreement']:,} of {check['frames']:,} classes agree.</p>")

    parts.append("<h2>Golden model: confusion matrix</h2>")
    parts.append(f"<figure>{_confusion_plot(confusion, labels)}</figure>")

    perf = flow["performance"]
    parts.append("<h2>Folding, cycles and memory</h2>")
    rows = [(n, layer["kind"], ", ".join(f"{k} {v}" for k, v in layer["folding"].items()) or "-",
             f"{layer['cycles']:,}", layer["depth"], f"{layer['memory_bits']:,}")
            for n, layer in enumerate(perf["layers"])]
    parts.append(_table(rows, ["layer", "kind", "folding", "cycles/frame", "depth",
                               "memory bits"]))
    parts.append(f"<p>Initiation interval {perf['initiation_interval']:,} cycles/frame (set "
                 f"by {perf['bottleneck']}), latency about {perf['latency']:,} cycles, "
                 f"{perf['memory_bits']:,} memory bits.</p>")
    parts.append(f"<figure>{_cycles_plot(perf)}</figure>")

    parts.append("<h2>Simulation</h2>")
    sim = flow.get("simulation")
    if sim:
        cycles = sim["cycles_per_frame"] or {}
        ok = sim["completed"] and sim["mismatches"] == 0
        parts.append(f"<p class=\"{'ok' if ok else 'bad'}\">{sim['frames']:,} frames through "
                     f"Verilator ({sim['engine']} engine) with {100 * sim['stall']:.0f}% stalls "
                     f"on both streams: {sim['mismatches']} mismatches against the golden "
                     f"model.</p>")
        parts.append(_table([("cycles/frame", cycles.get("measured"), cycles.get("model")),
                             ("latency (cycles)", (sim["latency"] or {}).get("measured"),
                              (sim["latency"] or {}).get("model"))],
                            ["", "measured", "model"]))
    else:
        parts.append("<p>Not simulated in this flow.</p>")

    parts.append("<h2>Board</h2>")
    build = flow.get("build")
    if build:
        parts.append(f"<p>{html.escape(build['board'])}: {html.escape(build['bitstream'])}; "
                     f"timing {'met' if build['timing_met'] else 'FAILED'}.</p>")
        parts.append(f"<figure>{_resources_plot(build)}</figure>")
        parts.append(f"<figure>{_clock_plot(build)}</figure>")
    else:
        parts.append("<p>No bitstream built in this flow.</p>")

    if images is not None and len(images):
        parts.append("<h2>Test images</h2>")
        parts.append(f"<figure>{_images_plot(images, shape, golden, hardware, labels)}"
                     f"</figure>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>bnnhw flow report</title><style>{_STYLE}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")


def write_html(path, text):
    """Write the report ``text`` to ``path`` atomically."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path
