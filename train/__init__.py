"""Training: PyTorch BNN layers, models, training loop and export.

The only part of bnnhw that imports torch (installed as ``bnnhw.train``).

Importing this package sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment already sets it,
which only takes effect if torch has not been imported yet. OpenMP threads otherwise spin while
waiting, and on a machine whose cores are shared with other work, two spinning threads made a
digits epoch 30-50 times slower (measured: 13-19 s instead of 0.35-0.6 s per epoch).
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
