"""The board subcommands of ``bnnhw``: ``build``, ``program`` and ``run``.

:mod:`bnnhw.cli` declares their options and calls these functions only when the subcommand is
used, so other commands never import Amaranth or pyserial.
"""

import sys
from pathlib import Path

from .. import artifact, datasets
from ..errors import BnnhwError
from ..progress import Progress
from .board import get_board

__all__ = ["board_options", "run_build", "run_program", "run_run", "run_explore"]


def board_options(net, board, args):
    """The folding and memory styles parsed command-line ``args`` ask for on ``board``: a
    folding given (``--pe``/``--simd``, ``--folding``) with the memories that fit it, the
    board's design for ``--target`` cycles, else the fastest that fits
    (:func:`~bnnhw.boards.build.fitting_design`); ``--memory`` overrides the memories."""
    from ..folding import folding_from_args, memory_from_options
    from .build import board_design, board_memory, fitting_design
    given = [name for name in ("pe", "simd", "folding") if getattr(args, name, None) is not None]
    target = getattr(args, "target", None)
    patchable = getattr(args, "patchable", False)
    if given:
        folding = folding_from_args(net, args)
        memory = board_memory(net, folding, board, patchable=patchable)
    elif target is not None:
        folding_from_args(net, args)                 # checks the target
        folding, memory = board_design(net, board, target, patchable=patchable)
    else:
        folding, memory = fitting_design(net, board, patchable=patchable)
    if getattr(args, "memory", None) is not None:
        memory = memory_from_options(net, args.memory)
    return folding, memory


def run_build(args):
    """``bnnhw build BOARD NETWORK``: bitstream, utilisation, Fmax; exit 2 if timing fails."""
    from .build import build, format_result
    board = get_board(args.board)
    net = artifact.load(args.network)
    if getattr(args, "reuse", None) is not None:
        return _reuse(board, net, args)
    if args.patchable and args.memory is not None:
        raise BnnhwError("--patchable chooses its memories (block RAM, SPRAM for weights "
                         "where needed): leave out --memory")
    folding, memory = board_options(net, board, args)
    build_dir = args.build_dir or Path("build") / f"{args.network.stem}-{board.name}"
    result = build(board, net, folding, build_dir, memory=memory, clock_mhz=args.clock,
                   baud=args.baud, scores=False if args.no_scores else None,
                   seed=getattr(args, "seed", None), patchable=args.patchable,
                   log=lambda text: print(text, file=sys.stderr))
    if getattr(args, "json", False):
        from ..report import document, dumps
        b = result.bounds
        print(dumps(document(
            "build", board=board.name, bitstream=str(result.bitstream),
            clock_mhz=result.clock_mhz, fmax_mhz=result.fmax_mhz, timing_met=result.timing_met,
            utilization={name: {"used": used, "available": available}
                         for name, (used, available) in result.utilization.items()},
            folding=[fold.as_dict() for fold in folding], cycles_per_frame=b.cycles,
            frames_per_second=b.gateware_fps, link_frames_per_second=b.link_fps,
            seconds=result.seconds)))
    else:
        print(format_result(result))
    if not result.timing_met:
        print(f"bnnhw: error: timing not met: {result.fmax_mhz:.1f} MHz achieved, "
              f"{result.clock_mhz:g} MHz needed", file=sys.stderr)
        return 2
    return 0


def _reuse(board, net, args):
    """``bnnhw build BOARD NETWORK --reuse DIR``: a new bitstream by patching block RAMs."""
    from .build import reuse
    given = [f"--{name.replace('_', '-')}" for name in
             ("pe", "simd", "folding", "target", "memory", "clock", "build_dir", "seed")
             if getattr(args, name, None) is not None] + (["--patchable"] if args.patchable
                                                          else [])
    if given:
        raise BnnhwError(f"--reuse keeps the build's design: {', '.join(given)} cannot be "
                         f"given with it")
    seconds, manifest = reuse(board, net, args.reuse,
                              log=lambda text: print(text, file=sys.stderr))
    bitstream = Path(args.reuse) / ("bnnhw.bin" if manifest["family"] == "ice40"
                                    else "bnnhw.bit")
    if getattr(args, "json", False):
        from ..report import document, dumps
        print(dumps(document("patch", board=board.name, network=str(args.network),
                             bitstream=str(bitstream), reused=str(args.reuse),
                             memories=len(manifest["roms"]), seconds=seconds,
                             image=str(Path(args.reuse) / "weights.bin")
                             if _has_image(manifest) else None)))
    else:
        lines = [f"bitstream      {bitstream} (patched: {len(manifest['roms'])} memories "
                 f"rewritten and read back)"]
        if _has_image(manifest):
            lines.append(f"weight image   {Path(args.reuse) / 'weights.bin'} (new: program "
                         f"both)")
        lines += [f"design         {manifest['folding']}, {manifest['clock_mhz']:g} MHz, as "
                  f"built", f"time           {seconds:.1f} s"]
        print("\n".join(lines))
    return 0


def _has_image(manifest):
    from ..gateware.plan import PATCHABLE_SPRAM
    return PATCHABLE_SPRAM in manifest["memory"]


def run_explore(args):
    """``bnnhw explore BOARD NETWORK``: :func:`bnnhw.boards.explore_command.run_explore`."""
    from .explore_command import run_explore
    return run_explore(args)


def run_program(args):
    """``bnnhw program BOARD BITSTREAM [--dry-run]``."""
    from .program import program
    return program(get_board(args.board), args.bitstream, image=args.image,
                   dry_run=args.dry_run)


def run_run(args):
    """``bnnhw run --port PORT NETWORK``: classify a dataset on the board, compare with golden."""
    try:
        import serial
    except ImportError:
        raise BnnhwError("bnnhw run needs pyserial: pip install pyserial "
                         "(or pip install -e \".[boards]\")") from None
    from .host import Client, run_images
    from .rates import bounds
    if args.timeout <= 0:
        raise BnnhwError(f"--timeout must be a positive number of seconds, not {args.timeout}")
    if args.baud <= 0:
        raise BnnhwError(f"--baud must be a positive number of bits per second, not {args.baud}")
    net = artifact.load(args.network)
    clock_hz = cycles = None
    scores = True
    if args.build_dir is not None:
        from .build import read_summary
        built = read_summary(args.build_dir)
        if built.get("baud") != args.baud:
            raise BnnhwError(f"{args.build_dir}: the bitstream speaks {built.get('baud')} "
                             f"baud, not the {args.baud} given with --baud")
        clock_hz, cycles = built["clock_mhz"] * 1e6, built["cycles_per_frame"]
        scores = built.get("scores", True)
    limits = bounds(net.input_size, net.classes, baud=args.baud, scores=scores,
                    clock_hz=clock_hz, cycles=cycles)
    x, y, _ = datasets.frames_for(net, args.dataset, count=args.count, network=args.network)
    device = args.port
    if device is None:
        from . import BOARDS
        from .ports import find_port
        names = [args.board] if getattr(args, "board", None) else sorted(BOARDS)
        device = find_port([get_board(name) for name in names])
        print(f"port         {device}", file=sys.stderr)
    try:
        port = serial.serial_for_url(device, baudrate=args.baud, timeout=0.05)
    except serial.SerialException as error:
        raise BnnhwError(f"cannot open serial port {device}: {error}") from None
    with port:
        client = Client(port, n_pixels=net.input_size, in_bits=net.input_bits,
                        classes=net.classes, timeout=args.timeout)
        summary = run_images(client, net, x, y, progress=Progress("bnnhw run: images"))
    n = max(summary.images, 1)
    rate = summary.images / max(summary.seconds, 1e-9)
    if getattr(args, "json", False):
        from ..report import document, dumps
        print(dumps(document(
            "run", network=str(args.network), port=device, images=summary.images,
            seconds=summary.seconds, images_per_second=rate,
            board_accuracy=summary.correct / n, golden_accuracy=summary.golden_correct / n,
            mismatches=len(summary.mismatches),
            first_mismatches=[{"image": i, "golden_class": e, "board_class": g}
                              for i, e, g in summary.mismatches[:10]],
            retries=dict(summary.errors), bound_by=limits.verdict(rate))))
        return 1 if summary.mismatches else 0
    print(f"images       {summary.images} in {summary.seconds:.2f} s ({rate:,.1f} images/s, "
          f"end to end)")
    for line in limits.lines():
        print(line)
    print(f"bound by     {limits.verdict(rate)}")
    print(f"accuracy     board {100 * summary.correct / n:.2f}%   golden "
          f"{100 * summary.golden_correct / n:.2f}%")
    print(f"mismatches   {len(summary.mismatches)} (board vs golden, class or scores)")
    if summary.errors:
        print("retries      " + ", ".join(f"{k}: {v}" for k, v in sorted(summary.errors.items())))
    for index, expected, got in summary.mismatches[:10]:
        print(f"  image {index}: golden class {expected}, board class {got}")
    return 1 if summary.mismatches else 0
