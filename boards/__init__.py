"""Board shells (UART, LEDs) around the network, and bitstream build/program glue."""
