"""Board shells (UART, LEDs) around the network, and bitstream build/program glue."""

# Board name -> the module that defines its BOARD (see board.py). Kept here, free of imports, so
# that the command line can list the boards without loading Amaranth. A new board is one file
# beside this one and one line here.
BOARDS = {
    "icebreaker": "bnnhw.boards.icebreaker",
    "ulx3s": "bnnhw.boards.ulx3s",
}
