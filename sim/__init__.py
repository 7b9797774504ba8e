"""Cycle-accurate simulation of generated Verilog: cocotb benches and their Verilator runner."""
