"""A GTKWave save file beside a waveform, so that the first look at a trace is useful.

:func:`write_save_file` writes ``WAVES.gtkw`` next to ``WAVES`` (``.vcd`` or ``.fst``): the
network top's two stream handshakes and payloads first, then one group per stage of the top
(``layer0``, ``convert1``, ...; a stage built of several, such as a convolution's window
generator and engine, gets a group for each), each with its input and output handshakes and
data and, for a matrix engine, its issue enable, first accumulator and result. ``gtkwave
WAVES.gtkw`` opens the trace with them.

The signals are read from the VCD's own scopes, so only signals that exist are listed; an FST
cannot be read here, so for one the groups come from the instance names in the Verilog.
"""

import re
from pathlib import Path

__all__ = ["write_save_file", "vcd_scopes"]

_PORTS = ("i__valid", "i__ready", "i__payload.data", "i__payload", "o__valid", "o__ready",
          "o__payload.data", "o__payload")
_INSIDE = ("issue", "acc0", "result0", "avail", "credits")


def vcd_scopes(path):
    """``{"TOP.bnn_top.layer0": [signal names], ...}`` from a VCD's header."""
    scopes, stack = {}, []
    with open(path, errors="replace") as file:
        for line in file:
            words = line.split()
            if not words:
                continue
            if words[0] == "$scope":
                stack.append(words[2])
                scopes.setdefault(".".join(stack), [])
            elif words[0] == "$upscope":
                stack.pop()
            elif words[0] == "$var":
                scopes[".".join(stack)].append(words[4])
            elif words[0] == "$enddefinitions":
                break
    return scopes


def _stage_order(name):
    kind, number = re.fullmatch(r"([a-z]+?)(\d*)", name.split(".")[-1]).groups()
    return (int(number or 0), kind != "convert")


def _groups_from_vcd(path):
    scopes = vcd_scopes(path)
    top = "TOP.bnn_top" if "TOP.bnn_top" in scopes else "TOP"
    names = scopes.get(top, [])
    groups = [("network input", [f"{top}.{n}" for n in ("clk", "rst", *_PORTS[:4])
                                 if n in names and not (n == "i__payload"
                                                        and "i__payload.data" in names)]),
              ("network output", [f"{top}.{n}" for n in _PORTS[4:]
                                  if n in scopes.get(top, [])])]
    children = sorted((s for s in scopes if s.count(".") == top.count(".") + 1
                       and s.startswith(top + ".")), key=_stage_order)
    for child in children:
        stages = [child] + sorted(s for s in scopes if re.fullmatch(
            re.escape(child) + r"\.stage\d+", s))
        for stage in stages:
            names = scopes[stage]
            signals = [f"{stage}.{n}" for n in _PORTS + _INSIDE if n in names
                       and not (n.endswith("payload") and f"{n}.data" in names)]
            if signals:
                groups.append((stage[len(top) + 1:], signals))
    return groups


def _groups_from_verilog(verilog):
    text = Path(verilog).read_text()
    stages = sorted(set(re.findall(r"^\s*\S+\s+(layer\d+|convert\d+)\s*\(", text, re.M)),
                    key=_stage_order)
    top = "TOP.bnn_top"
    return ([("network input", [f"{top}.{n}" for n in ("clk", "rst", "i__valid", "i__ready",
                                                      "i__payload")]),
             ("network output", [f"{top}.{n}" for n in ("o__valid", "o__ready",
                                                       "o__payload")])]
            + [(stage, [f"{top}.{stage}.{n}" for n in ("i__valid", "i__ready", "i__payload",
                                                       "o__valid", "o__ready", "o__payload")])
               for stage in stages])


def write_save_file(waves, verilog=None):
    """Write ``WAVES.gtkw`` for the trace ``waves``; return its path."""
    waves = Path(waves).resolve()
    if waves.suffix == ".fst":
        if verilog is None:
            raise ValueError("an FST trace needs the Verilog to find its stages")
        groups = _groups_from_verilog(verilog)
    else:
        groups = _groups_from_vcd(waves)
    lines = [f'[dumpfile] "{waves}"', "[timestart] 0", "[size] 1400 900",
             "[signals_width] 320", "[sst_expanded] 1"]
    for title, signals in groups:
        if not signals:
            continue
        lines += ["@800200", f"-{title}"]                # an open group
        for signal in signals:
            wide = signal.endswith(("payload", ".data", "acc0", "credits", "avail"))
            lines += ["@22" if wide else "@28", signal]   # hex for buses
        lines += ["@1000200", f"-{title}"]               # the group's end
    path = waves.with_suffix(".gtkw")
    path.write_text("\n".join(lines) + "\n")
    return path
