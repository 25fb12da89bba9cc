"""Memory plan of a model: the figures host.simulate and `host.quantize export-c` print, alone.

    python -m host.plan [MODEL] [--json OUT]        (also: tinylls plan)

MODEL is a tinylls model file; without it, the network `python -m host.simulate` trains from
scratch by default (MobileNetV1-0.25, 96x96x3, 2 classes, grid head, every weighted layer
trainable). Nothing is computed here; it reports:

- from the C core bound to the model (host.core.CModel, the line host.simulate logs): the scratch
  arena, the largest layer input+output, and the activation bytes a backprop trainer would keep;
- from the device blob (host-only area stripped; host.quantize.size_report, the report of
  export-c): flash bytes, RAM to infer, and RAM to train = trainable tensors
  (host.modelfile.train_ram_bytes, the layers flagged trainable in the file) + arena + structs.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Optional, Sequence

from host import cli_common

TOOL = "host.plan"


def default_model():
    """host.simulate's from-scratch default net with its defaults (seed 0, all layers trainable)."""
    from host import nets, simulate
    from host.datasets import synthetic

    calib = synthetic.make(16, seed=0, difficulty=simulate.DEFAULT_DIFFICULTY).images
    model = nets.build("mobilenet", seed=0, calib=calib, classes=2, alpha=0.25, resolution=96, channels=3,
                       head=simulate.DEFAULT_HEAD)
    nets.set_learning_rates(model, simulate.DEFAULT_LR_HIDDEN, simulate.DEFAULT_LR_CLASSIFIER)
    simulate.select_trainable(model, "all")
    return model


def plan(model) -> dict:
    from host import modelfile
    from host.core import CModel
    from host.quantize import size_report

    cm = CModel(model)
    rep = size_report(modelfile.strip_host(modelfile.to_bytes(model)))
    rep.pop("explain", None)
    rep.update(model=model.name, layers=len(model.layers), input_shape=list(model.input_shape),
               classes=model.classes, trainable_layers=sum(1 for L in model.layers if L.has_weights and L.trainable),
               scratch_bytes=cm.arena_bytes, max_layer_bytes=cm.max_layer_bytes,
               bp_activation_bytes=cm.bp_activation_bytes)
    return rep


def build_parser():
    p = cli_common.ArgumentParser(tool=TOOL, description=__doc__.split("\n\n")[0],
                                  epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("model", nargs="?", metavar="MODEL",
                   help="tinylls model file (default: host.simulate's from-scratch MobileNetV1-0.25 96x96x3)")
    p.add_argument("--json", metavar="OUT", help="also write the figures as JSON")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from host import modelfile
    from host.core import TinyllsError

    try:
        if args.model is not None and not os.path.isfile(args.model):
            raise FileNotFoundError(f"{args.model}: no such file")
        model = modelfile.load(args.model) if args.model else default_model()
        rep = plan(model)
    except (OSError, ValueError, TinyllsError) as exc:   # ModelFileError is a ValueError
        return cli_common.fail(TOOL, exc)
    print(f"model {rep['model']}: {rep['layers']} layers ({rep['trainable_layers']} trainable), "
          f"input {tuple(rep['input_shape'])}, {rep['classes']} classes")
    print(f"scratch arena {rep['scratch_bytes']} B (largest layer in+out {rep['max_layer_bytes']} B); "
          f"a backprop trainer keeps {rep['bp_activation_bytes']} B of activations")
    if "ram_bytes_train" in rep:
        print(f"board: flash {rep['flash_bytes']} B; RAM to infer {rep['ram_bytes_infer']} B "
              f"(arena {rep['arena_bytes']} + structs {rep['struct_bytes']}); RAM to train "
              f"{rep['ram_bytes_train']} B (+ trainable tensors {rep['train_ram_bytes']} B)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rep, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(cli_common.run_main(TOOL, main))
