"""A fleet of virtual clients fine-tuning the VWW detector together (issue 13), on Flower.

    python bench/fleet.py [--clients 50] [--rounds 10] [--seed 0] [--quick] [--json OUT]

Data: the shared EEMBC VWW images (read in place), split as host.simulate does (600 train / 200
test). Every client gets a label-skewed shard of the training images seen through its own seeded
camera (host.fleet.make_shards / make_camera); the pretrained MLPerf Tiny vww_96_int8.tflite is
imported in memory (host.tflite_import). Compared, on the held-out test images under every client's
camera (200 x N evaluations per model):

- pretrained: no training;
- local-only: each client fine-tunes alone on its shard (field recipe), evaluated under its camera
  (the mean over clients);
- centralized: one fine-tune on the union of the shards (all cameras), evaluated under each camera;
- fleet: the global model after --rounds rounds of host.fleet (IntFedAvg), evaluated under each camera.

Hyper-parameters are chosen on a validation split of the training data, never the test images:
the training images are split 480 / 120 (seeded); every candidate of each method trains on the 480
(the same shards and cameras) and is scored on the 120 under every camera; the best of each
method is then retrained on all 600 and tested. Candidates (epochs x scale of the recipe's rates): FLEET_GRID
(epochs per round), LOCAL_GRID, CENTRAL_GRID. Prints one JSON object (bench/report.py).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from report import emit  # noqa: E402

SHARED = Path(os.environ.get("TINYLLS_SHARED", REPO.parent / "shared"))
DEFAULT_MODEL = (SHARED / "datasets" / "mlperf-tiny-vww-models" / "benchmark" / "training" / "visual_wake_words"
                 / "trained_models" / "vww_96_int8.tflite")
DEFAULT_DATA = SHARED / "datasets" / "vww01-eembc"

# candidates (epochs, scale of the recipe's rates) per method; fleet epochs are per round
FLEET_GRID = [(1, 1.0), (2, 1.0), (1, 3.0), (2, 3.0), (4, 3.0), (2, 10.0)]
LOCAL_GRID = [(5, 1.0), (10, 1.0), (20, 1.0), (5, 3.0), (10, 3.0)]
CENTRAL_GRID = [(1, 1.0), (2, 1.0), (5, 1.0), (2, 3.0), (5, 3.0)]
VAL_SAMPLES = 120


def under_cameras(model, images, labels, cams) -> list[float]:
    """Accuracy of `model` on `images` seen through each camera."""
    from host import fleet
    return [fleet.evaluate_model(model, cam.apply(images), labels) for cam in cams]


def trained(template, device, epochs: int, lr_scale: float = 1.0):
    """`template` fine-tuned on one device's data alone (the field recipe through host.train.run)."""
    from host import fleet, fleet_agg
    layers = fleet_agg.federated_layers(template)
    arrays, _ = device.fit(template, fleet_agg.get_arrays(template, layers), layers, rnd=0, seed=device.cid,
                           epochs=epochs, lr_scale=lr_scale, local_eval=False)
    return fleet.Fleet(template, {}).global_model(arrays)


def union_device(devices):
    from host import fleet
    x = np.concatenate([d.images for d in devices.values()])
    y = np.concatenate([d.labels for d in devices.values()])
    return fleet.SimDevice(10_000, x, y, None, threads=None)


def experiment(template, tr_x, tr_y, te_x, te_y, args, *, fleet_cfg, local_epochs, central_epochs, log):
    """Every method on (tr -> te); returns accuracies per camera and timings."""
    from host import fleet
    devices, cams, shards = fleet.build_devices(tr_x, tr_y, clients=args.clients, seed=args.seed)
    out = {"shard_sizes": [len(s) for s in shards],
           "shard_person_fraction": [round(float(np.mean(tr_y[s])), 3) for s in shards]}
    test_mixed = fleet.mixed_camera_images(te_x, cams)
    res = {}
    # (a) pretrained
    res["pretrained"] = under_cameras(template, te_x, te_y, cams)
    log(f"pretrained {np.mean(res['pretrained']):.3f}")
    # fleet
    for (E, scale) in fleet_cfg:
        fl = fleet.Fleet(template, devices, seed=args.seed, quiet=args.quiet)
        t0 = time.perf_counter()
        s = fleet.run_fleet(fl, rounds=args.rounds, local_epochs=E, lr_scale=scale, local_eval=False,
                            eval_fn=lambda arrays: fleet.evaluate_model(fl.global_model(arrays), test_mixed, te_y))
        wall = time.perf_counter() - t0
        g = fl.global_model(s["final_arrays"])
        key = f"fleet E={E} x{scale:g}"
        res[key] = under_cameras(g, te_x, te_y, cams)
        out.setdefault("fleet_runs", {})[key] = {
            "round_accuracies_mixed_cameras": s["round_accuracies"], "seconds": round(wall, 1),
            "seconds_per_round": [p["seconds"] for p in s["per_round"]],
            "bytes_down_per_client": s["per_round"][0]["bytes_down_per_client"],
            "bytes_up_per_client": s["per_round"][0]["bytes_up_per_client"],
            "flower_bytes_down_per_client": s["per_round"][0]["flower_bytes_down_per_client"],
            "bytes_per_round": s["per_round"][0]["bytes_round_total"],
            "global_weights_sha256": s["global_weights_sha256"]}
        log(f"{key}: {np.mean(res[key]):.3f} ({wall:.0f} s)")
    # (b) local-only: each client alone, under its own camera
    for E, scale in local_epochs:
        accs = []
        for cid, d in devices.items():
            m = trained(template, d, E, scale)
            accs.append(fleet.evaluate_model(m, cams[cid].apply(te_x), te_y))
        key = f"local-only E={E} x{scale:g}"
        res[key] = accs
        log(f"{key}: {np.mean(accs):.3f}")
    # (c) centralized on the union of the shards
    for E, scale in central_epochs:
        t0 = time.perf_counter()
        m = trained(template, union_device(devices), E, scale)
        key = f"centralized E={E} x{scale:g}"
        res[key] = under_cameras(m, te_x, te_y, cams)
        log(f"{key}: {np.mean(res[key]):.3f} ({time.perf_counter() - t0:.0f} s)")
    out["accuracy_per_camera"] = {k: [round(a, 4) for a in v] for k, v in res.items()}
    out["accuracy_mean"] = {k: round(float(np.mean(v)), 4) for k, v in res.items()}
    return out


def best(means: dict, prefix: str) -> str:
    cands = {k: v for k, v in means.items() if k.startswith(prefix)}
    return max(cands, key=lambda k: (cands[k], k))


def parse_key(key: str):
    parts = key.split()
    E = int(parts[1].split("=")[1])
    scale = float(parts[2][1:]) if len(parts) > 2 else 1.0
    return E, scale


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="8 clients, 2 rounds, one candidate per method")
    ap.add_argument("--no-select", action="store_true", help="skip the validation sweep (use the first candidates)")
    ap.add_argument("--json")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    from host import fleet
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    fleet_grid, local_grid, central_grid = FLEET_GRID, LOCAL_GRID, CENTRAL_GRID
    if args.quick:
        args.clients, args.rounds = min(args.clients, 8), min(args.rounds, 2)
        fleet_grid, local_grid, central_grid = FLEET_GRID[:1], LOCAL_GRID[:1], CENTRAL_GRID[2:3]
    t_start = time.perf_counter()
    template = fleet.load_model(args.model)
    tr, te = fleet.load_split(args.data)
    out = {"bench": "fleet", "model": args.model, "data": args.data, "clients": args.clients, "rounds": args.rounds,
           "seed": args.seed, "train_samples": int(len(tr.labels)), "test_samples": int(len(te.labels)),
           "host": {"machine": platform.machine(), "cpus": len(os.sched_getaffinity(0))}}
    if not args.no_select and not args.quick:
        perm = np.random.default_rng([args.seed, 31337]).permutation(len(tr.labels))
        fit, val = perm[VAL_SAMPLES:], perm[:VAL_SAMPLES]
        log(f"selection: {len(fit)} train / {len(val)} validation images")
        sel = experiment(template, tr.images[fit], tr.labels[fit], tr.images[val], tr.labels[val], args,
                         fleet_cfg=fleet_grid, local_epochs=local_grid, central_epochs=central_grid, log=log)
        means = sel["accuracy_mean"]
        chosen = {m: parse_key(best(means, m)) for m in ("fleet", "local-only", "centralized")}
        out["selection"] = {"validation_samples": VAL_SAMPLES, "accuracy_mean": means,
                            "fleet_runs": {k: {kk: v[kk] for kk in ("round_accuracies_mixed_cameras", "seconds")}
                                           for k, v in sel["fleet_runs"].items()}}
    else:
        chosen = {"fleet": fleet_grid[0], "local-only": local_grid[0], "centralized": central_grid[0]}
    out["chosen"] = {m: {"epochs": e, "lr_scale": sc} for m, (e, sc) in chosen.items()}
    log(f"chosen: {out['chosen']}")
    final = experiment(template, tr.images, tr.labels, te.images, te.labels, args, fleet_cfg=[chosen["fleet"]],
                       local_epochs=[chosen["local-only"]], central_epochs=[chosen["centralized"]], log=log)
    m = final["accuracy_mean"]
    fk = [k for k in m if k.startswith("fleet")][0]
    out["test"] = {
        "global_fleet": m[fk], "pretrained": m["pretrained"],
        "local_only_mean": m[[k for k in m if k.startswith("local-only")][0]],
        "centralized": m[[k for k in m if k.startswith("centralized")][0]],
        "fleet_run": final["fleet_runs"][fk],
        "accuracy_per_camera": final["accuracy_per_camera"],
        "shard_sizes": final["shard_sizes"], "shard_person_fraction": final["shard_person_fraction"],
    }
    out["cameras"] = [fleet.make_camera(args.seed, i).as_dict() for i in range(args.clients)]
    out["seconds_total"] = round(time.perf_counter() - t_start, 1)
    return emit(out, args.json)


if __name__ == "__main__":
    sys.exit(main())
