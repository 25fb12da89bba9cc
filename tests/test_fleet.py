"""host.fleet / host.fleet_agg: a Flower fleet of tinylls devices.

- Flower's stock averaging is wrong for int8 tensors (shown on the installed flwr);
- host.fleet_agg: N identical clients aggregate to themselves exactly; the int8 / int32 average is
  within 1 LSB (in fact 1/2) of the float reference, per weight, on both its paths;
- a federation of simulated cores and boards (the firmware's dispatcher in process, and - marked
  firmware - 2 emulated boards under QEMU) completes; every board returns, bit for bit, the tensors
  the simulated core computes for the same inputs; the same seed gives the same global weights; a
  client killed mid-round is reported and the round completes with the others.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from host import fleet_agg

ROOT = Path(__file__).resolve().parents[1]


def need_flwr():
    """Flower (the `fleet` extra), else skip; under CI (CI=true) a missing flwr fails."""
    try:
        import flwr  # noqa: F401
    except ImportError:
        msg = "flwr not installed; install: pip install '.[fleet]'"
        if os.environ.get("CI") == "true":
            pytest.fail(msg + " (CI=true: this check must run)")
        pytest.skip(msg)


# ---------------------------------------------------------------------------- aggregation
def random_specs(rng, n_layers=3):
    specs = []
    for i in range(n_layers):
        c = int(rng.integers(2, 9))
        kind = ["conv", "dwconv", "fc"][i % 3]
        shape = {"conv": (c, 3, 3, 4), "dwconv": (3, 3, c), "fc": (c, 16)}[kind]
        s_w = rng.uniform(1e-3, 5e-2, c)
        specs.append(fleet_agg.TensorSpec(fleet_agg.tensor_name(i, "w"), "int8", shape,
                                          fleet_agg.channel_axis(kind), s_w))
        specs.append(fleet_agg.TensorSpec(fleet_agg.tensor_name(i, "b"), "int32", (c,), 0, 0.02 * s_w))
    return specs


def random_client(rng, specs, spread=None):
    out = {}
    for s in specs:
        if s.dtype == "int8":
            out[s.name] = rng.integers(-128, 128, s.shape).astype(np.int8)
        else:
            out[s.name] = rng.integers(-(1 << 20), 1 << 20, s.shape).astype(np.int32)
    return out


def test_identical_clients_aggregate_to_themselves():
    rng = np.random.default_rng(0)
    specs = random_specs(rng)
    one = random_client(rng, specs)
    one["L00.w"].flat[:4] = [-128, 127, -1, 0]                    # the ends of the range too
    for n in (1, 2, 7, 50):
        counts = rng.integers(1, 300, n)
        got = fleet_agg.aggregate(specs, [(one, int(k)) for k in counts])
        for s in specs:
            assert got[s.name].dtype == one[s.name].dtype
            assert np.array_equal(got[s.name], one[s.name]), (n, s.name)
        # the float path (clients carrying scales, here the global ones) also returns them exactly
        got = fleet_agg.aggregate(specs, [(one, int(k)) for k in counts],
                                  [{s.name: s.scale for s in specs}] * n)
        assert all(np.array_equal(got[s.name], one[s.name]) for s in specs)


@pytest.mark.parametrize("own_scales", [False, True])
def test_average_within_one_lsb_of_the_float_reference(own_scales):
    rng = np.random.default_rng(1)
    specs = random_specs(rng, 6)
    clients = [(random_client(rng, specs), int(rng.integers(1, 100))) for _ in range(13)]
    scales = None
    if own_scales:      # each client quantized with its own per-channel scales (within 20%)
        scales = [{s.name: s.scale * rng.uniform(0.8, 1.2, s.scale.shape) for s in specs} for _ in clients]
        for (arrs, _), cs in zip(clients, scales):           # keep the reals inside the global range
            for s in specs:
                if s.dtype == "int8":
                    arrs[s.name] = (arrs[s.name] // 2).astype(np.int8)
    got = fleet_agg.aggregate(specs, clients, scales)
    ref = fleet_agg.float_reference(specs, clients, scales)
    for s in specs:
        lo, hi = (-128, 127) if s.dtype == "int8" else (-(1 << 31), (1 << 31) - 1)
        r = np.clip(ref[s.name], lo, hi)
        err = np.abs(got[s.name].astype(np.float64) - r)
        assert err.max() <= 0.5 + 1e-6, (s.name, err.max())     # round to nearest: within 1/2 LSB
    if not own_scales:   # the integer path is exactly round-half-up of the rational mean
        total = sum(n for _, n in clients)
        for s in specs:
            num = sum(a[s.name].astype(np.int64) * n for a, n in clients)
            assert np.array_equal(got[s.name], np.floor_divide(2 * num + total, 2 * total).astype(s.dtype))


def test_average_of_int8_extremes_and_ties():
    spec = fleet_agg.TensorSpec("L00.w", "int8", (2, 3), 0, np.array([0.1, 0.2]))
    a = {"L00.w": np.array([[127, 127, -128], [-1, 1, 100]], np.int8)}
    b = {"L00.w": np.array([[127, 126, -128], [-2, 2, 101]], np.int8)}
    got = fleet_agg.aggregate([spec], [(a, 1), (b, 1)])["L00.w"]
    assert got.tolist() == [[127, 127, -128], [-1, 2, 101]]      # no overflow; ties round half up


def test_stock_flower_averaging_is_wrong_for_int8():
    """What Flower 1.42 does with int8 arrays (recorded in host/fleet_agg.py and docs/fleet.md)."""
    need_flwr()
    from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
    from flwr.common import FitRes, Status, Code, ndarrays_to_parameters
    from flwr.server.strategy.aggregate import aggregate, aggregate_inplace
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

    a, b = np.array([100, 127, -1], np.int8), np.array([101, 127, -2], np.int8)
    # legacy aggregate: int8 * n summed in int8 overflows (100 and 101 -> -27.5)
    legacy = aggregate([([a], 1), ([b], 1)])[0]
    assert legacy[0] == -27.5
    # legacy aggregate_inplace (FedAvg's default): the factor 0.5 cast to int8 is 0 -> zeros
    fit = [(None, FitRes(Status(Code.OK, ""), ndarrays_to_parameters([x.copy()]), 1, {})) for x in (a, b)]
    assert not aggregate_inplace(fit)[0].any()
    # message-API FedAvg: float64 out; astype truncates toward zero, ties do not round
    recs = [RecordDict({"arrays": ArrayRecord({"w": Array(x)}), "m": MetricRecord({"num-examples": 1})})
            for x in (a, b)]
    msg = aggregate_arrayrecords(recs, "num-examples")["w"].numpy()
    assert msg.dtype == np.float64 and msg.tolist() == [100.5, 127.0, -1.5]
    assert msg.astype(np.int8).tolist() == [100, 127, -1]
    # ours
    spec = fleet_agg.TensorSpec("w", "int8", (3,), 0, np.ones(1))
    assert fleet_agg.aggregate([spec], [({"w": a}, 1), ({"w": b}, 1)])["w"].tolist() == [101, 127, -1]


# ---------------------------------------------------------------------------- shards and cameras
def test_shards_partition_and_cameras_are_seeded():
    from host import fleet
    labels = np.random.default_rng(0).integers(0, 2, 103)
    shards = fleet.make_shards(labels, 10, seed=4)
    allidx = np.concatenate(shards)
    assert sorted(allidx.tolist()) == list(range(103))
    assert sorted(len(s) for s in shards) == [10] * 7 + [11] * 3
    assert [s.tolist() for s in fleet.make_shards(labels, 10, seed=4)] == [s.tolist() for s in shards]
    fractions = [labels[s].mean() for s in shards]
    assert max(fractions) - min(fractions) > 0.3              # label skew: non-IID
    assert fleet.make_camera(3, 5) == fleet.make_camera(3, 5) != fleet.make_camera(3, 6)
    img = np.random.default_rng(1).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    out = fleet.make_camera(3, 5).apply(img)
    assert out.dtype == np.uint8 and out.shape == img.shape and not np.array_equal(out, img)


# ---------------------------------------------------------------------------- federations
@pytest.fixture(scope="module")
def tiny():
    """The digits net (8x8x1, 10 classes) and 96 random images: a fleet in seconds."""
    need_flwr()
    from host import nets
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (96, 8, 8, 1), dtype=np.uint8)
    y = rng.integers(0, 2, 96)
    model = nets.build("digits", seed=0, calib=x[:8], classes=10)
    return model, x, y


def tiny_fleet(tiny, *, sims=4, boards=0, seed=0, drops=(), keep=False):
    from host import fleet, protocol
    model, x, y = tiny
    devs, cams, _ = fleet.build_devices(x, y, clients=sims + boards, seed=seed)
    for i in range(boards):       # the first clients are boards: the firmware's dispatcher in process
        d = devs[i]
        devs[i] = fleet.BoardDevice(i, d.images, d.labels, d.camera, opener=protocol.SimulatedPort)
    return fleet.Fleet(model, devs, seed=seed, drops=set(drops), quiet=True, keep=keep)


def run_tiny(fl, rounds=2, **kw):
    from host import fleet
    return fleet.run_fleet(fl, rounds=rounds, local_epochs=2, lr_scale=300.0, **kw)


def assert_boards_match_the_simulated_core(fl, rounds):
    """Each board's returned tensors equal those a SimDevice computes from the same inputs."""
    from host import fleet
    checked = 0
    for (rnd, cid), got in sorted(fl.returned.items()):
        d = fl.devices[cid]
        if not isinstance(d, fleet.BoardDevice):
            continue
        twin = fleet.SimDevice(cid, d.images, d.labels, d.camera)
        want, _ = twin.fit(fl.template, fl.sent[rnd], fl.layers, rnd=rnd, seed=fl.seed, epochs=rounds["epochs"],
                           lr_scale=rounds["lr_scale"], local_eval=rounds["local_eval"])
        assert sorted(want) == sorted(got)
        for k in want:
            assert want[k].dtype == got[k].dtype and np.array_equal(want[k], got[k]), (rnd, cid, k)
        assert any(not np.array_equal(fl.sent[rnd][k], got[k]) for k in got), "the board did not train"
        checked += 1
    return checked


def test_fleet_of_simulated_cores_and_boards(tiny):
    fl = tiny_fleet(tiny, sims=4, boards=2, keep=True)
    evals = []
    s = run_tiny(fl, eval_fn=lambda arrays: evals.append(1) or 0.5)
    assert [p["completed"] for p in s["per_round"]] == [6, 6] and s["dropped"] == []
    assert len(evals) == 3 and s["round_accuracies"] == [0.5, 0.5, 0.5]
    assert assert_boards_match_the_simulated_core(fl, {"epochs": 2, "lr_scale": 300.0, "local_eval": True}) == 4
    p = s["per_round"][0]
    assert p["bytes_down_per_client"] == p["bytes_up_per_client"] == s["federated_tensor_bytes"]
    assert p["flower_bytes_down_per_client"] >= p["bytes_down_per_client"]
    c = p["clients"][0]
    assert {"accuracy-before", "accuracy-after", "local-heads", "num-examples"} <= set(c)
    # the global model is the integer average of what came back
    last = s["final_arrays"]
    back = [(fl.returned[(2, cid)], len(fl.devices[cid].labels)) for cid in range(6)]
    agg = fleet_agg.aggregate(fl.specs, back)
    assert all(np.array_equal(agg[k], last[k]) for k in last)
    assert s["global_weights_sha256"] == fleet_model_sha(fl, last)


def fleet_model_sha(fl, arrays):
    from host.model import weights_sha256
    return weights_sha256(fl.global_model(arrays))


def test_same_seed_same_global_weights(tiny):
    a = run_tiny(tiny_fleet(tiny, seed=5), rounds=2)
    b = run_tiny(tiny_fleet(tiny, seed=5), rounds=2)
    c = run_tiny(tiny_fleet(tiny, seed=6), rounds=2)
    assert a["global_weights_sha256"] == b["global_weights_sha256"] != c["global_weights_sha256"]


def test_killed_client_does_not_stop_the_round(tiny):
    fl = tiny_fleet(tiny, sims=4, boards=1, drops={(1, 2), (2, 0)}, keep=True)
    s = run_tiny(fl, rounds=3, fraction=1.0)
    rounds = s["per_round"]
    assert [r["completed"] for r in rounds] == [4, 3, 3]
    assert [(d["round"], d["client"]) for d in s["dropped"]] == [(1, 2), (2, 0)]
    assert "ClientDropped" in s["dropped"][0]["reason"]
    assert 2 not in rounds[1]["sampled"] and 0 not in rounds[2]["sampled"]     # gone: not sampled again
    assert sorted(c for (r, c) in fl.returned if r == 1) == [0, 1, 3, 4]


def test_federate_last_k_layers_only(tiny):
    model = tiny[0]
    fl = tiny_fleet(tiny, keep=True)
    fl.federate_last = 1
    fl.__post_init__()
    s = run_tiny(fl, rounds=1)
    last = fleet_agg.weighted_layers(model)[-1]
    assert s["federated_layers"] == [last] and sorted(s["final_arrays"]) == [f"L{last:02d}.b", f"L{last:02d}.w"]
    assert s["federated_tensor_bytes"] == model.layers[last].weights.nbytes + model.layers[last].bias.nbytes


def test_deployment_apps_over_a_grid(tiny, tmp_path):
    """host.fleet:server_app / client_app (what `flwr run` starts) over an in-process Grid: each
    SuperNode builds its own device from run_config / node_config, as the CLI's clients do."""
    from flwr.app import Context, RecordDict

    from host import fleet, modelfile
    model, x, y = tiny
    path = tmp_path / "m.tlm"
    modelfile.save(model, str(path))
    cfg = {"model": str(path), "data": "unused", "seed": 3, "rounds": 2, "local-epochs": 2, "lr-scale": 300.0,
           "json": str(tmp_path / "s.json")}
    n = 4
    local = tiny_fleet(tiny, sims=n, seed=3)        # the same shards and cameras, run in process

    class Split:                                    # load_split stand-in: the tiny data
        labels, images = y, x
    orig = fleet.load_split
    fleet.load_split = lambda data: (Split, None)
    try:
        fleet._flwr_identity()
        grid = fleet.make_grid(local, fleet.client_app, run_config=cfg,
                               node_config=lambda c: {"partition-id": c, "num-partitions": n})
        fleet.server_app(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=cfg))
    finally:
        fleet.load_split = orig
    s = json.loads((tmp_path / "s.json").read_text())
    ref = run_tiny(local, rounds=2)
    assert s["global_weights_sha256"] == ref["global_weights_sha256"]
    assert [p["sampled"] for p in s["per_round"]] == [[1, 2, 3, 4]] * 2          # reported by node id


def test_cli_writes_the_summary(tmp_path, shared_dir):
    need_flwr()
    vww = shared_dir / "datasets" / "vww01-eembc"
    tfl = (shared_dir / "datasets" / "mlperf-tiny-vww-models" / "benchmark" / "training" / "visual_wake_words"
           / "trained_models" / "vww_96_int8.tflite")
    if not (vww.exists() and tfl.exists()):
        pytest.skip("shared VWW data / model missing")
    out = tmp_path / "f.json"
    argv = ["--model", str(tfl), "--data", str(vww), "--clients", "4", "--rounds", "1", "--shard-limit", "10",
            "--seed", "2", "--drop", "1:3", "--json", str(out), "--quiet"]
    from host import fleet
    assert fleet.main(argv) == 0
    s = json.loads(out.read_text())
    assert s["per_round"][0]["completed"] == 3 and s["dropped"][0]["client"] == 3
    assert len(s["round_accuracies"]) == 2 and len(s["cameras"]) == 4
    assert s["per_round"][0]["bytes_down_per_client"] == s["federated_tensor_bytes"] == 219064
    assert fleet.main(argv) == 0
    assert json.loads(out.read_text())["global_weights_sha256"] == s["global_weights_sha256"]


# ---------------------------------------------------------------------------- emulated boards
@pytest.mark.firmware
@pytest.mark.shared
def test_qemu_boards_in_a_fleet_match_the_simulated_core(tmp_path, shared_dir):
    """2 emulated boards (QEMU over the UART) and 4 simulated cores, 8 VWW images each, 2 rounds;
    board 1 is killed in the middle of round 2 (its QEMU terminated) and the round completes."""
    need_flwr()
    sys.path.insert(0, str(ROOT / "tests"))
    from test_firmware import TFLITE, VWW, build_firmware  # noqa: E402
    from tools import need
    need("make", "make")
    need("arm-none-eabi-gcc", "gcc-arm-none-eabi libnewlib-arm-none-eabi")
    need("qemu-system-arm", "qemu-system-arm")
    if not (VWW.exists() and TFLITE.exists()):
        pytest.skip(f"reference data {VWW} / {TFLITE} missing")
    from host import fleet, modelfile
    from host.core import CModel
    model = fleet.load_model(str(TFLITE))
    layers = fleet_agg.federated_layers(model)
    planned = fleet.prepare_model(model, fleet_agg.get_arrays(model, layers), layers)
    arena = CModel(planned, **fleet.train_config(0)).arena_bytes
    blob = len(modelfile.to_bytes(planned))
    elf = build_firmware(tmp_path / "fw", arena_bytes=arena, blob_bytes=(blob + 4095) // 4096 * 4096)
    tr, _ = fleet.load_split(str(VWW))
    devs, _, _ = fleet.build_devices(tr.images, tr.labels, clients=6, boards=2, qemu=str(elf), seed=1,
                                     shard_limit=8)
    fl = fleet.Fleet(model, devs, seed=1, drops={(2, 1)}, quiet=True, keep=True)
    try:
        s = fleet.run_fleet(fl, rounds=2, local_epochs=1, local_eval=False)
    finally:
        for d in devs.values():
            if isinstance(d, fleet.BoardDevice):
                d.close()
    assert [p["completed"] for p in s["per_round"]] == [6, 5]
    assert [(d["round"], d["client"]) for d in s["dropped"]] == [(2, 1)]
    assert sorted(c for (r, c) in fl.returned if c < 2) == [0, 0, 1]
    assert assert_boards_match_the_simulated_core(fl, {"epochs": 1, "lr_scale": 1.0, "local_eval": False}) == 3
    links = [c["link-bytes"] for p in s["per_round"] for c in p["clients"] if "link-bytes" in c]
    assert len(links) == 3 and min(links) > blob


def test_cli_bad_options_exit_2(tmp_path, capsys):
    need_flwr()
    from host import fleet
    base = ["--model", str(tmp_path / "none.tlm"), "--data", str(tmp_path)]
    assert fleet.main(base) == 2
    assert "no such file" in capsys.readouterr().err
    assert fleet.main(base + ["--fraction", "0"]) == 2
    assert fleet.main(base + ["--boards", "2"]) == 2
    assert "needs --qemu" in capsys.readouterr().err
    with pytest.raises(fleet.FleetError):
        fleet.parse_drops(["3"])
