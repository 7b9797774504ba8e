"""``bnnhw import MODEL.onnx -o NET.npz``: fold, write, then check against the executor."""

import time

import numpy as np

from ..errors import BnnhwError

__all__ = ["add_arguments", "run_command"]


def add_arguments(p):
    from pathlib import Path
    p.add_argument("model", metavar="MODEL", type=Path, help="QONNX or ONNX model (.onnx)")
    p.add_argument("-o", "--output", metavar="NET", type=Path, required=True,
                   help="network file to write (.npz)")
    p.add_argument("--input-bits", metavar="N", type=int, default=None,
                   help="bits of an input pixel (default: the dataset's, else 8)")
    p.add_argument("--input-divisor", metavar="D", type=int, default=None,
                   help="the model takes pixel / D (default: 2**bits - 1, as torchvision's "
                        "ToTensor)")
    p.add_argument("--dataset", metavar="DATASET", default=None,
                   help="check on 'digits' or a directory of MNIST-style IDX files "
                        "(default: random pixels)")
    p.add_argument("--split", choices=("train", "test"), default="test",
                   help="which part of the dataset (default: %(default)s)")
    p.add_argument("--count", metavar="N", type=int, default=None,
                   help="check on the first N images (default: all of the split, or 1000 "
                        "random frames)")
    p.add_argument("--seed", metavar="N", type=int, default=0,
                   help="seed of the random frames (default: %(default)s)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object instead of text (keys: bnnhw/report.py)")


def _frames(args, net):
    from .. import datasets
    if args.dataset is None:
        count = 1000 if args.count is None else args.count
        if count <= 0:
            raise BnnhwError(f"count must be a positive integer, not {count!r}")
        rng = np.random.default_rng(args.seed)
        return rng.integers(0, net.input.limit, (count, net.input_size)), "random", None
    x, _, data = datasets.frames_for(net, args.dataset, split=args.split, count=args.count,
                                     network=str(args.model))
    return x, data.name, args.split


def run_command(args):
    import importlib.util
    from .. import artifact, datasets
    from ..paths import output_path
    from . import agree as agreement
    from .graph import import_model
    for module in ("onnx", "onnxruntime", "qonnx"):
        if importlib.util.find_spec(module) is None:
            raise BnnhwError(f"bnnhw import needs the import extra ({module} is missing): "
                             f"pip install 'bnnhw[import]'")
    start = time.perf_counter()
    output_path(args.output, "network")
    bits = args.input_bits
    if bits is None:
        bits = datasets.load_dataset(args.dataset).in_bits if args.dataset else 8
    imported = import_model(args.model, input_bits=bits, divisor=args.input_divisor)
    net = imported.network
    artifact.save(net, args.output)
    x, dataset, split = _frames(args, net)
    result = agreement.agree(imported, x)
    seconds = time.perf_counter() - start
    if args.json:
        from ..report import document, dumps, tensor_json
        layers = [{"index": n, "kind": layer.kind, "input": tensor_json(layer.input),
                   "output": tensor_json(layer.output)} for n, layer in enumerate(net.layers)]
        print(dumps(document(
            "import", model=str(args.model), network=str(args.output), layers=layers,
            input_bits=bits, input_divisor=imported.divisor, dataset=dataset, split=split,
            frames=result.frames, agreeing=result.agreeing,
            class_agreement=result.class_agreement, layer_bits=result.layer_bits,
            differences=result.differences, float_ties=imported.float_ties,
            seconds=seconds)))
        return 0
    kinds = ", ".join(layer.kind for layer in net.layers)
    print(f"{args.model} -> {args.output}: {len(net.layers)} layers ({kinds}), input "
          f"{net.input.describe()} (the model takes x = u / {imported.divisor}), "
          f"{net.classes} classes")
    where = "random frames" if dataset == "random" else f"{dataset} ({split})"
    print(f"QONNX executor vs golden on {result.frames} {where}: classes agree on "
          f"{result.agreeing} of {result.frames} ({100 * result.class_agreement:.2f}%)")
    for row in result.layer_bits:
        share = row["agreeing"] / row["bits"] if row["bits"] else 1.0
        print(f"  layer {row['layer']} ({row['kind']}): {row['agreeing']:,} of "
              f"{row['bits']:,} bits agree ({100 * share:.3f}%)")
    if imported.float_ties:
        print(f"  output: {imported.float_ties} popcounts of one class round to the same float "
              f"score (cannot change the argmax)")
    for entry in result.differences:
        print(f"  frame {entry['frame']}: executor class {entry['executor_class']}, golden "
              f"class {entry['golden_class']}: {entry['explanation']}")
    return 0
