"""Initiation interval and latency of whole networks in Amaranth's simulator, against the model.

Both streams are always ready; the interval is the mean number of cycles between results once
the pipeline is full, the latency the cycles from the first input beat to the first result.
Run: ``python bench/interval.py`` (about a minute).
"""

import numpy as np

from bnnhw import testing
from bnnhw.gateware.top import NetworkTop

CASES = [
    # sizes, input bits, folding, in_simd
    ([64, 64, 64, 10], 5, [(8, 16), (4, 8), (2, 64)], 16),
    ([64, 64, 64, 10], 5, [(4, 64), (16, 16), (10, 4)], 4),
    ([64, 64, 64, 10], 5, [(1, 8), (2, 64), (1, 32)], 8),
    ([64, 64, 64, 10], 5, [(2, 64), (2, 64), (5, 4)], 1),
    ([64, 64, 64, 10], 5, [(64, 64), (64, 64), (10, 64)], 64),
    ([784, 256, 256, 256, 10], 8, [(16, 49), (16, 64), (16, 64), (10, 32)], 49),
]


def main(frames=8):
    print(f"{'network':>22}  {'folding (pe, simd)':>36}  in_simd  II model  measured  "
          f"latency model  measured")
    for sizes, bits, folding, in_simd in CASES:
        net = testing.random_network(np.random.default_rng(5), sizes, input_bits=bits)
        top = NetworkTop(net, folding, in_simd=in_simd)
        interval, latency = testing.interval_and_latency(top, frames)
        model = top.performance
        print(f"{'-'.join(map(str, sizes)):>22}  {str(folding):>36}  {in_simd:7}  "
              f"{model.initiation_interval:8}  {interval:8.1f}  {model.latency:13}  {latency:8}",
              flush=True)


if __name__ == "__main__":
    main()
