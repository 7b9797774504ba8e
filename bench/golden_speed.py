"""Golden-model throughput on one core: a 784-256-256-256-10 network over 10,000 inputs.

Target (issue 2): at least 20,000 frames/s. Run: ``python bench/golden_speed.py``.
"""

import os

# One core: BLAS threads are fixed when numpy loads, so set them before the import.
for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[variable] = "1"

import time  # noqa: E402

import numpy as np  # noqa: E402

from bnnhw import golden, testing  # noqa: E402


def main(frames=10_000, repeats=5):
    rng = np.random.default_rng(0)
    net = testing.random_network(rng, [784, 256, 256, 256, 10], input_bits=8)
    x = testing.random_inputs(rng, net, frames).astype(np.uint8)
    golden.run(net, x[:100])                                  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        golden.run(net, x)
        times.append(time.perf_counter() - start)
    best, median = min(times), sorted(times)[len(times) // 2]
    print(f"golden model, 784-256-256-256-10, {frames:,} frames, 1 thread, {repeats} runs")
    print(f"  best   {best:.3f} s  {frames / best:10,.0f} frames/s")
    print(f"  median {median:.3f} s  {frames / median:10,.0f} frames/s   (target >= 20,000)")


if __name__ == "__main__":
    main()
