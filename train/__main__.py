"""``python -m bnnhw.train ARGS`` is ``bnnhw train ARGS``: the form torchrun starts,
``torchrun --nproc_per_node 2 -m bnnhw.train -o net.npz ...``."""

import sys

from bnnhw.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
