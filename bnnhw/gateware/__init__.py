"""Gateware: the stream components the layer kinds elaborate to, and the network top.

- :mod:`.plan`: how the components size themselves, in plain Python (no Amaranth import).
- :mod:`.engine`: the folded matrix engine (XNOR-popcount or add/subtract, threshold).
- :mod:`.argmax`: class scores and their argmax.
- :mod:`.glue`: width converters and pipelines of stages; :mod:`.fifo`: the credit FIFO.
- :mod:`.ports`: the network top's port contract, shared with the board shell and simulators.
- :mod:`.top`: :class:`~.top.NetworkTop`, a network's chain of stages, and its Verilog.
"""
