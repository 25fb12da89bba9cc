"""python -m host.fleet: a fleet of tinylls devices fine-tunes one int8 model together on Flower.

    python -m host.fleet --model vww_96_int8.tflite --data ../shared/datasets/vww01-eembc \\
        --clients 50 --rounds 10 --local-epochs 1 --fraction 1.0 --seed 0 --json fleet.json
    python -m host.fleet ... --clients 4 --qemu firmware/build/mps2-an386/tinylls.elf --boards 2
    python -m host.fleet ... --clients 0 --port /dev/ttyACM0 --port /dev/ttyACM1

A client is one device: the simulated core (host.train.SimulatedCore) or a board over the serial
link (host.stream.Board; --qemu starts emulated ones, host.stream.QemuBoard). Each round the server
(a Flower message-API strategy, `IntFedAvg`) samples a fraction of the clients and sends them the
current trainable tensors (int8 weights, int32 biases; all weighted layers or the last
--federate-last K); each client writes them into its copy of the model, fine-tunes on its own shard
with the field recipe (host.recipes: LLS hidden layers, classifier rate, stochastic rounding) for
--local-epochs epochs through host.train.run - the one training loop - and returns its tensors, its
sample count and metrics (accuracy on its shard before / after, its local heads' accuracies). The
server averages them in the real domain with per-channel scales and requantizes deterministically
(host.fleet_agg: Flower's stock averaging is wrong for int8, see there).

Data: --data is split as host.simulate does (its default 25% validation; 800 images: 600 / 200); the
training part is dealt into --clients label-skewed shards (each client's person fraction drawn from
Beta(--skew, --skew)) and every client sees its shard through its own camera (seeded brightness,
contrast, colour cast, blur: `Camera`). The global model is evaluated on the held-out test images,
image j through camera j mod N (per round), and under every client's camera (at the end).

Reproducible: the same options give the same `global_weights_sha256` (client sampling, per client
per round training seeds and the integer aggregation are all derived from --seed). A client that
fails mid-round (a dead board, --drop ROUND:CLIENT to simulate one) is reported in that round and
the round completes with the others; it is not sampled again.

Flower runs in process here (`LocalGrid`: a flwr Grid that hands each message to the ClientApp,
boards concurrently in threads); `server_app` / `client_app` are the same strategy and client
function for a deployment (`flwr run`, see docs/fleet.md).
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from host import fleet_agg

DEFAULT_SKEW = 0.5            # Beta(a, a) person fraction per client: a < 1 pushes shards to one class
TAU = 0.5

TOOL = "host.fleet"


class FleetError(Exception):
    """Bad options or environment; reported as one line, exit 2."""


class ClientDropped(RuntimeError):
    """A client that stopped answering in the middle of its round."""


# ---------------------------------------------------------------------------- cameras and shards
@dataclass(frozen=True)
class Camera:
    """One client's camera, in the style of host.simulate.camera_shift: per channel
    x' = clip(contrast * (gain_c * x - 128) + 128 + brightness), then a 3x3 box blur mixed in."""
    brightness: float = 0.0
    contrast: float = 1.0
    gain: tuple = (1.0, 1.0, 1.0)
    blur: float = 0.0          # 0: sharp, 1: the full 3x3 box blur

    def apply(self, images: np.ndarray) -> np.ndarray:
        x = np.asarray(images).astype(np.float64)
        g = np.asarray(self.gain[: x.shape[-1]], np.float64)
        x = np.clip(self.contrast * (g * x - 128.0) + 128.0 + self.brightness, 0, 255)
        if self.blur > 0:
            h, w = x.shape[1:3]
            pad = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
            box = sum(pad[:, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)) / 9.0
            x = (1.0 - self.blur) * x + self.blur * box
        return np.clip(np.round(x), 0, 255).astype(np.uint8)

    def as_dict(self) -> dict:
        return {"brightness": self.brightness, "contrast": self.contrast, "gain": list(self.gain),
                "blur": self.blur}


def make_camera(seed: int, client: int) -> Camera:
    """Client `client`'s camera, drawn from (seed, client): brightness -40..+30, contrast 0.45..1.1,
    colour gains 0.8..1.2 per channel, blur 0..1."""
    r = np.random.default_rng([int(seed), 7919, int(client)])
    return Camera(brightness=round(float(r.uniform(-40, 30)), 2), contrast=round(float(r.uniform(0.45, 1.1)), 3),
                  gain=tuple(round(float(v), 3) for v in r.uniform(0.8, 1.2, 3)), blur=round(float(r.uniform(0, 1)), 3))


def make_shards(labels: np.ndarray, n_clients: int, seed: int, skew: float = DEFAULT_SKEW) -> list[np.ndarray]:
    """Split indices 0..len(labels)-1 into n_clients label-skewed shards of (nearly) equal size:
    client i wants a fraction q_i ~ Beta(skew, skew) of class 1 (drawn from the pool left)."""
    labels = np.asarray(labels)
    n = len(labels)
    if not 1 <= n_clients <= n:
        raise FleetError(f"--clients {n_clients}: needs 1..{n} (training samples)")
    r = np.random.default_rng([int(seed), 104729])
    pools = {c: list(r.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)}
    classes = sorted(pools)
    sizes = [n // n_clients + (1 if i < n % n_clients else 0) for i in range(n_clients)]
    shards = []
    for size in sizes:
        q = r.beta(skew, skew) if len(classes) == 2 else None
        want = {classes[-1]: int(round(q * size))} if q is not None else {}
        take = []
        for c in (classes[::-1] if q is not None else classes):
            k = min(want.get(c, size - len(take)), len(pools[c]), size - len(take))
            take += [pools[c].pop() for _ in range(k)]
        for c in classes:                          # a class ran out: fill from the others
            while len(take) < size and pools[c]:
                take.append(pools[c].pop())
        shards.append(np.array(sorted(take), np.int64))
    return shards


def client_seed(seed: int, rnd: int, client: int) -> int:
    """The training seed (stochastic rounding, sample order) of `client` in round `rnd`."""
    return int(np.random.SeedSequence([int(seed), int(rnd), int(client)]).generate_state(1)[0] & 0x7FFFFFFF)


# ---------------------------------------------------------------------------- the model a client trains
def prepare_model(template, arrays: dict, layers: list[int], lr_scale: float = 1.0):
    """A copy of `template` holding `arrays`, with the field recipe's rates (times lr_scale) on the
    federated `layers` and every other layer frozen."""
    from host import recipes

    model = copy.deepcopy(template)
    fleet_agg.set_arrays(model, arrays)
    recipes.finetune_recipe(model)
    keep = set(layers)
    for i, L in enumerate(model.layers):
        L.trainable = L.trainable and i in keep
        L.lr *= lr_scale
    return model


def train_config(seed: int) -> dict:
    from host import recipes
    return dict(basis="square", variant="plain", rounding=recipes.RECIPE_ROUNDING, seed=int(seed), tau=TAU)


def split_weights(model, blob: bytes, layers: list[int]) -> dict[str, np.ndarray]:
    """The federated tensors out of a READ_WEIGHTS stream (host.model.weights_sha256's layout:
    per weighted layer its int8 weights, then its int32 bias, then LLS modulation if any)."""
    out, off = {}, 0
    keep = set(layers)
    for i, L in enumerate(model.layers):
        if L.weights is None:
            continue
        nw, nb = L.weights.size, L.bias.size * 4
        if i in keep:
            out[fleet_agg.tensor_name(i, "w")] = np.frombuffer(blob, np.int8, L.weights.size, off).reshape(L.weights.shape).copy()
            out[fleet_agg.tensor_name(i, "b")] = np.frombuffer(blob, "<i4", L.bias.size, off + nw).astype(np.int32)
        off += nw + nb
        if getattr(L, "lls_m", None) is not None:
            off += L.lls_m.size * 4
    if off != len(blob):
        raise ValueError(f"READ_WEIGHTS returned {len(blob)} bytes, the model has {off}")
    return out


def accuracy(results, labels) -> float:
    labels = np.asarray(labels)
    return float(np.mean(np.array([r.pred for r in results]) == labels)) if len(labels) else float("nan")


# ---------------------------------------------------------------------------- devices
class Device:
    """One client: its shard (through its camera) and where it trains. `fit` is one round."""
    kind = "device"

    def __init__(self, cid: int, images: np.ndarray, labels: np.ndarray, camera: Camera | None = None):
        self.cid = int(cid)
        self.images = images
        self.labels = np.asarray(labels, np.int64)
        self.camera = camera
        self.alive = True
        self.lock = threading.Lock()

    # a backend bound to `model` / `cm` for one round; subclasses
    def open(self, model, cm):
        raise NotImplementedError

    def read(self, model, cm, layers) -> dict:
        raise NotImplementedError

    def kill(self) -> None:
        self.alive = False

    def fit(self, template, arrays: dict, layers: list[int], *, rnd: int, seed: int, epochs: int,
            lr_scale: float = 1.0, local_eval: bool = True, drop: bool = False) -> tuple[dict, dict]:
        """Load `arrays`, fine-tune `epochs` epochs with host.train.run, return (tensors, metrics)."""
        from host import train
        from host.core import CModel

        if not self.alive:
            raise ClientDropped(f"client {self.cid} ({self.kind}) is gone")
        model = prepare_model(template, arrays, layers, lr_scale)
        s = client_seed(seed, rnd, self.cid)
        cm = CModel(model, **train_config(s))
        t0 = time.perf_counter()
        with self.lock:
            backend = self.open(model, cm)
            n = len(self.labels)
            metrics = {"num-examples": int(n), "client": self.cid, "seed": s}
            if local_eval:
                metrics["accuracy-before"] = accuracy(backend.evaluate(train.quantize(model, self.images)), self.labels)
            if drop:
                backend = _DropMidway(backend, max(1, n // 2), self)
            ev_x, ev_y = (self.images, self.labels) if local_eval else (self.images[:0], self.labels[:0])
            out = train.run(backend, model, self.images, self.labels, ev_x, ev_y, epochs=epochs,
                            lr_schedule="constant", seed=s, eval_each_epoch=False, progress=False,
                            baseline=False)   # accuracy-before is measured above, on the same images
            tensors = self.read(model, cm, layers)
        metrics["train-accuracy"] = float(out["train_accuracy"])
        if local_eval:
            metrics["accuracy-after"] = float(out["val_accuracy"])
            metrics["local-heads"] = [float(a) if L.has_weights else -1.0
                                      for a, L in zip(out["local_accuracy"], model.layers)]
        metrics["seconds"] = time.perf_counter() - t0
        return tensors, metrics


class _DropMidway:
    """A backend that dies after `after` training samples (--drop): the device is killed."""

    def __init__(self, inner, after: int, device: Device):
        self.inner, self.after, self.device, self.seen = inner, after, device, 0
        self.train_chunk = max(1, min(inner.train_chunk, after))
        self.eval_chunk = inner.eval_chunk

    def set_learning_rates(self, rates):
        self.inner.set_learning_rates(rates)

    def train(self, x, y):
        if self.seen >= self.after:
            self.device.kill()                  # an emulated board: its QEMU is gone, the link fails
            if getattr(self.device, "qemu", None) is None:
                raise ClientDropped(f"client {self.device.cid} dropped out after {self.seen} samples")
        self.seen += len(y)
        return self.inner.train(x, y)

    def evaluate(self, x):
        return self.inner.evaluate(x)

    def postfix(self):
        return self.inner.postfix()


class SimDevice(Device):
    """The simulated core: host.train.SimulatedCore on this host."""
    kind = "sim"

    def __init__(self, *a, threads: int | None = 1, **k):
        super().__init__(*a, **k)
        self.threads = threads

    def open(self, model, cm):
        from host import train
        return train.SimulatedCore(cm, threads=self.threads)

    def read(self, model, cm, layers) -> dict:
        return fleet_agg.get_arrays(model, layers)


class BoardDevice(Device):
    """A board over the serial link (host.stream.Board): a port URL / device, or an emulated board
    (host.stream.QemuBoard running `qemu` ELF). Each round: RESET, LOAD the model file holding the
    round's tensors, SET_CONFIG (the round's seed), train through host.train.run, READ_WEIGHTS."""
    kind = "board"

    def __init__(self, *a, port: str | None = None, qemu: str | None = None, opener=None, **k):
        """port: serial device or pyserial URL; qemu: firmware ELF to emulate; opener: a callable
        returning a pyserial-like port (tests: host.protocol.SimulatedPort)."""
        super().__init__(*a, **k)
        self.port_url, self.elf, self.opener = port, qemu, opener
        self.qemu = None
        self.port = None
        self.link = None
        self.link_bytes = 0

    def connect(self):
        from host import protocol, stream
        if self.link is not None:
            return self.link
        if self.elf:
            self.qemu = stream.QemuBoard(self.elf)
            self.port = self.qemu.connect()
        elif self.opener is not None:
            self.port = self.opener()
        else:
            self.port = stream.open_port(self.port_url)
        self.link = protocol.Link(self.port)
        info = self.link.sync()
        if info.proto != protocol.lib.TL_PROTO_VERSION:
            raise FleetError(f"board {self.cid}: firmware protocol {info.proto}, host {protocol.lib.TL_PROTO_VERSION}")
        return self.link

    def open(self, model, cm):
        from host import modelfile, stream
        link = self.connect()
        before = link.stats.bytes_tx + link.stats.bytes_rx
        link.reset()
        blob = modelfile.to_bytes(model)
        loaded = link.load_model(blob)
        config = stream.core_config(cm)
        link.set_config(**config)
        info = link.info()
        if (info.model_size, info.model_crc) != (loaded["model_size"], loaded["model_crc"]) or info.config != config:
            raise ClientDropped(f"board {self.cid}: holds another model or configuration than sent")
        self._bytes0 = before
        return stream.Board(link)

    def fit(self, *a, **k):
        try:
            return super().fit(*a, **k)
        except Exception:
            self.close()            # a failed link is opened afresh if the board is sampled again
            raise

    def read(self, model, cm, layers) -> dict:
        blob = self.link.read_weights()
        self.link_bytes = self.link.stats.bytes_tx + self.link.stats.bytes_rx - self._bytes0
        return split_weights(model, blob, layers)

    def kill(self) -> None:
        super().kill()
        if self.qemu is not None:
            self.qemu.close()

    def close(self) -> None:
        if self.port is not None:
            try:
                self.port.close()
            except Exception:
                pass
        if self.qemu is not None:
            self.qemu.close()
        self.link = self.port = self.qemu = None


# ---------------------------------------------------------------------------- Flower
ARRAYS, CONFIG, METRICS = "arrays", "config", "metrics"


def to_record(arrays: dict):
    from flwr.app import Array, ArrayRecord
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in sorted(arrays.items())})


def from_record(record) -> dict:
    return {k: record[k].numpy() for k in record.keys()}


def record_bytes(record) -> int:
    """Bytes of the arrays as Flower ships them (each Array's serialized data)."""
    return int(sum(len(record[k].data) for k in record.keys()))


def client_train(fleet: "Fleet", dev: Device, msg):
    """One train message for device `dev`: fit on the message's tensors, reply with the new ones."""
    from flwr.app import Message, MetricRecord, RecordDict
    cfg = msg.content[CONFIG]
    rnd = int(cfg["server-round"])
    tensors, metrics = dev.fit(fleet.template, from_record(msg.content[ARRAYS]), fleet.layers, rnd=rnd,
                               seed=fleet.seed, epochs=int(cfg["local-epochs"]), lr_scale=float(cfg["lr-scale"]),
                               local_eval=bool(cfg["local-eval"]), drop=(rnd, dev.cid) in fleet.drops)
    if isinstance(dev, BoardDevice):
        metrics["link-bytes"] = int(dev.link_bytes)
    return Message(RecordDict({ARRAYS: to_record(tensors), METRICS: MetricRecord(metrics)}), reply_to=msg)


def make_client_app(fleet: "Fleet"):
    """The Flower ClientApp of an in-process fleet: node_config["partition-id"] names the device."""
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.train()
    def _train(msg, context):
        return client_train(fleet, fleet.devices[int(context.node_config["partition-id"])], msg)

    return app


def _flwr_identity():
    """The in-process stand-in for what Flower's ServerApp runtime sets before messages exist."""
    from flwr.supercore.task_identity import TaskIdentity
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = 1
    TaskIdentity.node_id = 0


def make_grid(fleet: "Fleet", client_app, run_config: dict | None = None, node_config=None):
    """A flwr Grid that delivers each message to `client_app` in this process: simulated clients
    one after the other, boards concurrently (one thread each). A client that raises gets an error
    reply (Flower's Error), as a SuperNode reports a failed ClientApp. Each node's Context has
    `run_config` and node_config(client) (default {"partition-id": client})."""
    from concurrent.futures import ThreadPoolExecutor

    from flwr.app import Context, Error, Message, RecordDict
    from flwr.serverapp import Grid

    class LocalGrid(Grid):
        def __init__(self):
            self._run = None
            self._replies: dict[str, Message] = {}
            self._count = 0
            self.contexts = {cid: Context(run_id=1, node_id=cid + 1, state=RecordDict(), run_config=dict(run_config or {}),
                                          node_config=node_config(cid) if node_config else {"partition-id": cid})
                             for cid in fleet.devices}

        def set_run(self, run):
            self._run = run

        @property
        def run(self):
            return self._run

        def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
            return Message(content=content, message_type=message_type, dst_node_id=dst_node_id, group_id=group_id)

        def get_node_ids(self):
            return [cid + 1 for cid, d in sorted(fleet.devices.items()) if d.alive]

        def _deliver(self, msg):
            cid = msg.metadata.dst_node_id - 1
            try:
                return client_app(msg, self.contexts[cid])
            except Exception as e:                       # the client failed: an error reply
                fleet.log(f"client {cid}: failed: {type(e).__name__}: {e}")
                from flwr.common.constant import ErrorCode
                return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=f"{type(e).__name__}: {e}"),
                               reply_to=msg)

        def push_messages(self, messages):
            messages = list(messages)
            ids = []
            for msg in messages:
                self._count += 1
                msg.metadata.__dict__["_message_id"] = f"m{self._count}"
                ids.append(msg.metadata.message_id)
            boards = [m for m in messages if isinstance(fleet.devices[m.metadata.dst_node_id - 1], BoardDevice)]
            sims = [m for m in messages if m not in boards]
            with ThreadPoolExecutor(max(1, len(boards))) as pool:
                futs = [(m, pool.submit(self._deliver, m)) for m in boards]
                for m in sims:
                    self._replies[m.metadata.message_id] = self._deliver(m)
                for m, f in futs:
                    self._replies[m.metadata.message_id] = f.result()
            return ids

        def pull_messages(self, message_ids):
            return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

        def send_and_receive(self, messages, *, timeout=None):
            return self.pull_messages(self.push_messages(messages))

    return LocalGrid()


def make_strategy(fleet: "Fleet", fraction: float):
    """IntFedAvg: Flower's message-API FedAvg with deterministic client sampling (from --seed and
    the round) and host.fleet_agg's integer-correct aggregation; records every round."""
    from flwr.app import MetricRecord
    from flwr.serverapp.strategy import FedAvg

    class IntFedAvg(FedAvg):
        def __init__(self):
            super().__init__(fraction_train=fraction, fraction_evaluate=0.0, min_train_nodes=1,
                             min_available_nodes=1)
            self.rounds: list[dict] = []

        def configure_train(self, server_round, arrays, config, grid):
            nodes = sorted(grid.get_node_ids())
            k = min(len(nodes), max(1, int(round(len(nodes) * self.fraction_train))))
            r = np.random.default_rng([fleet.seed, 15485863, int(server_round)])
            chosen = sorted(int(v) for v in r.choice(nodes, k, replace=False)) if nodes else []
            config["server-round"] = server_round
            self._sent = {"round": server_round, "sampled": [fleet.client_of(n) for n in chosen],
                          "down_payload_bytes": fleet_agg.payload_bytes(from_record(arrays)),
                          "down_flower_bytes": record_bytes(arrays), "t0": time.perf_counter()}
            from flwr.app import RecordDict
            record = RecordDict({ARRAYS: arrays, CONFIG: config})
            if fleet.keep:
                fleet.sent[server_round] = from_record(arrays)
            return self._construct_messages(record, chosen, "train")

        def aggregate_train(self, server_round, replies):
            replies = list(replies)
            ok = [m for m in replies if not m.has_error()]
            failed = [m for m in replies if m.has_error()]
            info = self._sent
            info["seconds"] = time.perf_counter() - info.pop("t0")
            info["dropped"] = [{"client": fleet.client_of(m.metadata.src_node_id), "reason": m.error.reason} for m in failed]
            answered = {fleet.client_of(m.metadata.src_node_id) for m in replies}
            info["dropped"] += [{"client": c, "reason": "no reply"} for c in info["sampled"] if c not in answered]
            ok.sort(key=lambda m: fleet.client_of(m.metadata.src_node_id))
            per = []
            for m in ok:
                mr = m.content[METRICS]
                per.append({k: (list(v) if isinstance(v, list) else v) for k, v in mr.items()})
                per[-1]["up_payload_bytes"] = fleet_agg.payload_bytes(from_record(m.content[ARRAYS]))
                per[-1]["up_flower_bytes"] = record_bytes(m.content[ARRAYS])
            info["clients"] = per
            if fleet.keep:
                for m in ok:
                    fleet.returned[(server_round, fleet.client_of(m.metadata.src_node_id))] = from_record(m.content[ARRAYS])
            info["completed"] = len(ok)
            self.rounds.append(info)
            if not ok:
                fleet.log(f"round {server_round}: no client answered; the global model stays")
                return None, None
            agg = fleet_agg.aggregate(fleet.specs, [(from_record(m.content[ARRAYS]), int(m.content[METRICS]["num-examples"]))
                                                    for m in ok])
            mean = {}
            for key in ("accuracy-before", "accuracy-after", "train-accuracy"):
                vals = [p[key] for p in per if key in p]
                if vals:
                    mean[key] = float(np.mean(vals))
            fleet.log(f"round {server_round}: {len(ok)}/{len(info['sampled'])} clients" +
                      (f", dropped {[d['client'] for d in info['dropped']]}" if info["dropped"] else "") +
                      "".join(f", {k} {v:.3f}" for k, v in mean.items()) + f" ({info['seconds']:.1f} s)")
            info["mean"] = mean
            return to_record(agg), MetricRecord(mean) if mean else None

    return IntFedAvg()


# ---------------------------------------------------------------------------- a fleet
@dataclass
class Fleet:
    template: object                       # host.model.Model: the pretrained (global) model
    devices: dict                          # client id -> Device
    seed: int = 0
    federate_last: int = 0
    drops: set = field(default_factory=set)     # (round, client) pairs that drop out (--drop)
    quiet: bool = False
    keep: bool = False                     # keep every round's global and returned tensors (tests)

    def __post_init__(self):
        self.sent: dict = {}                   # round -> global tensors sent (keep)
        self.returned: dict = {}               # (round, client) -> tensors returned (keep)
        self.layers = fleet_agg.federated_layers(self.template, self.federate_last)
        self.specs = fleet_agg.specs(self.template, self.layers)

    def client_of(self, node_id: int) -> int:
        """The client id of a Flower node: in process node ids are client + 1 (LocalGrid); a
        deployment (no local devices) reports the SuperNodes' own ids."""
        return int(node_id) - 1 if self.devices else int(node_id)

    def log(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)

    def global_model(self, arrays: dict):
        model = copy.deepcopy(self.template)
        fleet_agg.set_arrays(model, arrays)
        return model


def evaluate_model(model, images: np.ndarray, labels: np.ndarray, threads: int | None = None) -> float:
    """Accuracy of `model` (the host C core, inference only) on uint8 images."""
    from host import train
    from host.core import CModel
    m = copy.deepcopy(model)
    cm = CModel(m, **train_config(0))
    preds, _, _ = cm.infer_many(train.quantize(m, images), with_local=False,
                                threads=train.default_threads() if threads is None else threads)
    return float(np.mean(preds == np.asarray(labels)))


def mixed_camera_images(images: np.ndarray, cameras: list[Camera]) -> np.ndarray:
    """Image j through camera j mod len(cameras)."""
    out = np.empty_like(images)
    for k, cam in enumerate(cameras):
        out[k::len(cameras)] = cam.apply(images[k::len(cameras)])
    return out


def run_fleet(fleet: Fleet, *, rounds: int, local_epochs: int, fraction: float = 1.0, lr_scale: float = 1.0,
              local_eval: bool = True, eval_fn=None, grid=None) -> dict:
    """Run `rounds` Flower rounds over `fleet` (in process). eval_fn(arrays) -> accuracy of the
    global model (server side, before the first round and after each). Returns the summary."""
    from flwr.app import ConfigRecord, MetricRecord

    logging.getLogger("flwr").setLevel(logging.ERROR)    # not its "evaluation skipped" warning
    if grid is None:                       # in process: this fleet's devices behind a LocalGrid
        _flwr_identity()
        grid = make_grid(fleet, make_client_app(fleet))
    strategy = make_strategy(fleet, fraction)
    initial = fleet_agg.get_arrays(fleet.template, fleet.layers)
    accs = {}

    def evaluate(rnd, record):
        if eval_fn is None:
            return None
        acc = eval_fn(from_record(record))
        accs[rnd] = acc
        fleet.log(f"round {rnd}: global accuracy {acc:.3f}")
        return MetricRecord({"accuracy": acc})

    t0 = time.perf_counter()
    result = strategy.start(grid=grid, initial_arrays=to_record(initial), num_rounds=rounds,
                            train_config=ConfigRecord({"local-epochs": int(local_epochs), "lr-scale": float(lr_scale),
                                                       "local-eval": bool(local_eval)}),
                            evaluate_fn=evaluate)
    seconds = time.perf_counter() - t0
    final = from_record(result.arrays) if result.arrays is not None else initial
    model = fleet.global_model(final)
    from host.model import weights_sha256
    per_round = []
    for info in strategy.rounds:
        r = info["round"]
        clients = info["clients"]
        per_round.append({
            "round": r, "sampled": info["sampled"], "completed": info["completed"], "dropped": info["dropped"],
            "global_accuracy": accs.get(r), "mean": info.get("mean", {}),
            "seconds": round(info["seconds"], 3),
            "bytes_down_per_client": info["down_payload_bytes"], "bytes_up_per_client":
                int(np.mean([c["up_payload_bytes"] for c in clients])) if clients else 0,
            "flower_bytes_down_per_client": info["down_flower_bytes"],
            "flower_bytes_up_per_client": int(np.mean([c["up_flower_bytes"] for c in clients])) if clients else 0,
            "bytes_round_total": info["down_payload_bytes"] * len(info["sampled"]) +
                sum(c["up_payload_bytes"] for c in clients),
            "clients": clients,
        })
    return {
        "clients": len(fleet.devices), "boards": sum(isinstance(d, BoardDevice) for d in fleet.devices.values()),
        "rounds": rounds, "local_epochs": local_epochs, "fraction": fraction, "seed": fleet.seed,
        "lr_scale": lr_scale, "federate_last": fleet.federate_last, "federated_layers": fleet.layers,
        "federated_tensor_bytes": fleet_agg.payload_bytes(initial),
        "initial_accuracy": accs.get(0), "per_round": per_round,
        "round_accuracies": [accs.get(r) for r in range(rounds + 1)],
        "dropped": [dict(d, round=p["round"]) for p in per_round for d in p["dropped"]],
        "seconds": round(seconds, 3),
        "global_weights_sha256": weights_sha256(model),
        "final_arrays": final,
    }


# ---------------------------------------------------------------------------- a deployment (flwr run)
_DEPLOYED: dict = {}


def _deployed_fleet(run_config) -> Fleet:
    """This process's Fleet of a deployment (no local devices), from the run config."""
    key = tuple(sorted(run_config.items()))
    if key not in _DEPLOYED:
        template = load_model(str(run_config["model"]))
        _DEPLOYED[key] = Fleet(template, {}, seed=int(run_config.get("seed", 0)),
                               federate_last=int(run_config.get("federate-last", 0)))
    return _DEPLOYED[key]


def _deployed_device(context) -> Device:
    """This SuperNode's device: shard partition-id of num-partitions of --data's training split
    under its own camera; a board when node_config names a serial `port`, else the simulated core."""
    rc, nc = context.run_config, context.node_config
    key = ("device", tuple(sorted(rc.items())), tuple(sorted(nc.items())))
    if key not in _DEPLOYED:
        seed, pid, n = int(rc.get("seed", 0)), int(nc["partition-id"]), int(nc["num-partitions"])
        tr, _ = load_split(str(rc["data"]))
        idx = make_shards(tr.labels, n, seed, float(rc.get("skew", DEFAULT_SKEW)))[pid]
        cam = make_camera(seed, pid)
        x, y = cam.apply(tr.images[idx]), tr.labels[idx]
        _DEPLOYED[key] = (BoardDevice(pid, x, y, cam, port=str(nc["port"])) if "port" in nc
                          else SimDevice(pid, x, y, cam, threads=None))
    return _DEPLOYED[key]


def _make_deployment_apps():
    """server_app / client_app for `flwr run` (a SuperLink and one SuperNode per device)."""
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp

    server, client = ServerApp(), ClientApp()

    @server.main()
    def _main(grid, context):
        rc = context.run_config
        fl = _deployed_fleet(rc)
        summary = run_fleet(fl, rounds=int(rc.get("rounds", 5)), local_epochs=int(rc.get("local-epochs", 1)),
                            fraction=float(rc.get("fraction", 1.0)), lr_scale=float(rc.get("lr-scale", 1.0)),
                            grid=grid)
        summary.pop("final_arrays")
        if rc.get("json"):
            Path(str(rc["json"])).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        fl.log(f"global weights sha256 {summary['global_weights_sha256']}")

    @client.train()
    def _train(msg, context):
        return client_train(_deployed_fleet(context.run_config), _deployed_device(context), msg)

    return server, client


def __getattr__(name):          # host.fleet:server_app / host.fleet:client_app, built when asked for
    if name in ("server_app", "client_app"):
        server, client = _make_deployment_apps()
        globals().update(server_app=server, client_app=client)
        return globals()[name]
    raise AttributeError(name)


# ---------------------------------------------------------------------------- command line
def load_model(path: str):
    p = Path(path)
    if not p.is_file():
        raise FleetError(f"--model {path}: no such file")
    if p.suffix == ".tflite":
        from host.tflite_import import import_tflite
        return import_tflite(str(p))
    from host import modelfile
    return modelfile.load(str(p))


def load_split(data: str):
    """(train, test) exactly as host.simulate splits --data (default 25%: 800 images give 600 / 200)."""
    from host import simulate
    return simulate.load_data(data, None)


def build_devices(train_x, train_y, *, clients: int, boards: int = 0, qemu: str | None = None,
                  ports=(), seed: int = 0, skew: float = DEFAULT_SKEW, shard_limit: int = 0,
                  threads: int | None = 1) -> tuple[dict, list[Camera], list[np.ndarray]]:
    """Devices 0..N-1: the first --boards (emulated, --qemu) or len(ports) (serial) are boards,
    the rest simulated cores; every one with its shard and its camera."""
    n_boards = boards if qemu else len(ports)
    total = clients + n_boards if not qemu else max(clients, boards)
    if qemu and boards > clients:
        raise FleetError(f"--boards {boards} exceeds --clients {clients}")
    shards = make_shards(train_y, total, seed)
    cams = [make_camera(seed, i) for i in range(total)]
    devices = {}
    for i in range(total):
        idx = shards[i][:shard_limit] if shard_limit else shards[i]
        x, y = cams[i].apply(train_x[idx]), train_y[idx]
        if i < n_boards:
            devices[i] = BoardDevice(i, x, y, cams[i], qemu=qemu if qemu else None, port=None if qemu else ports[i])
        else:
            devices[i] = SimDevice(i, x, y, cams[i], threads=threads)
    return devices, cams, shards


def parse_drops(specs: list[str]) -> set:
    out = set()
    for s in specs or []:
        try:
            r, c = s.split(":")
            out.add((int(r), int(c)))
        except ValueError:
            raise FleetError(f"--drop {s!r}: expected ROUND:CLIENT, e.g. 2:5") from None
    return out


def build_parser() -> argparse.ArgumentParser:
    from host import cli_common
    ap = cli_common.ArgumentParser(tool=TOOL, description=__doc__.split("\n\n")[0],
                                   epilog="Exit status: 0 ok, 2 bad input or environment, 130 interrupted.")
    ap.add_argument("--model", required=True, help="pretrained model: a .tflite (imported) or a tinylls model file")
    ap.add_argument("--data", required=True, help="dataset path (host.datasets.open; split as host.simulate)")
    ap.add_argument("--clients", type=int, default=10, help="clients in the fleet (boards included with --qemu)")
    ap.add_argument("--rounds", type=int, default=5, help="federated rounds")
    ap.add_argument("--local-epochs", type=int, default=1, help="epochs each client trains per round")
    ap.add_argument("--fraction", type=float, default=1.0, help="fraction of the clients sampled per round")
    ap.add_argument("--seed", type=int, default=0, help="seeds shards, cameras, client sampling and training")
    ap.add_argument("--lr-scale", type=float, default=1.0, help="multiplies the field recipe's learning rates")
    ap.add_argument("--federate-last", type=int, default=0, metavar="K",
                    help="exchange and train only the last K weighted layers (0: all)")
    ap.add_argument("--skew", type=float, default=DEFAULT_SKEW,
                    help="label skew: each client's class-1 fraction ~ Beta(skew, skew)")
    ap.add_argument("--shard-limit", type=int, default=0, help="at most this many images per client")
    ap.add_argument("--qemu", metavar="ELF", help="emulated boards run this firmware (qemu-system-arm)")
    ap.add_argument("--boards", type=int, default=0, help="with --qemu: how many of the clients are emulated boards")
    ap.add_argument("--port", action="append", default=[], help="a real board's serial port (repeat per board)")
    ap.add_argument("--drop", action="append", default=[], metavar="ROUND:CLIENT",
                    help="client CLIENT dies in the middle of round ROUND (testing the fleet)")
    ap.add_argument("--no-local-eval", action="store_true", help="clients skip accuracy before/after on their shard")
    ap.add_argument("--threads", type=int, default=1, help="threads per simulated client")
    ap.add_argument("--json", help="write the summary here")
    ap.add_argument("--quiet", action="store_true", help="no progress output")
    return ap


def main(argv=None) -> int:
    from host import cli_common
    args = build_parser().parse_args(argv)
    try:
        import flwr  # noqa: F401
    except ImportError:
        return cli_common.fail(TOOL, "needs Flower: pip install '.[fleet]' (or pip install flwr)")
    from host import datasets, simulate
    from host.core import TinyllsError
    devices = {}
    try:
        for name in ("clients", "rounds", "local_epochs"):
            if getattr(args, name) < (0 if name == "clients" else 1):
                raise FleetError(f"--{name.replace('_', '-')} must be positive")
        if not 0 < args.fraction <= 1:
            raise FleetError(f"--fraction must be in (0, 1], got {args.fraction}")
        if args.boards and not args.qemu:
            raise FleetError("--boards needs --qemu ELF")
        template = load_model(args.model)
        tr, te = load_split(args.data)
        if tr.images.shape[1:] != template.input_shape:
            raise FleetError(f"--data images are {tr.images.shape[1:]}, the model expects {template.input_shape}")
        devices, cams, _ = build_devices(tr.images, tr.labels, clients=args.clients, boards=args.boards,
                                         qemu=args.qemu, ports=args.port, seed=args.seed, skew=args.skew,
                                         shard_limit=args.shard_limit, threads=args.threads)
        if not devices:
            raise FleetError("no clients: give --clients N and/or --port")
        fleet = Fleet(template, devices, seed=args.seed, federate_last=args.federate_last,
                      drops=parse_drops(args.drop), quiet=args.quiet)
        test_x = mixed_camera_images(te.images, cams)
        summary = run_fleet(fleet, rounds=args.rounds, local_epochs=args.local_epochs, fraction=args.fraction,
                            lr_scale=args.lr_scale, local_eval=not args.no_local_eval,
                            eval_fn=lambda arrays: evaluate_model(fleet.global_model(arrays), test_x, te.labels))
    except (FleetError, datasets.DataError, simulate.UsageError, TinyllsError, ValueError, OSError) as e:
        return cli_common.fail(TOOL, e)
    finally:
        for d in devices.values():
            if isinstance(d, BoardDevice):
                d.close()
    summary.pop("final_arrays")
    summary.update(model=args.model, data=args.data, cameras=[c.as_dict() for c in cams],
                   test_samples=int(len(te.labels)))
    print(json.dumps({k: summary[k] for k in ("clients", "rounds", "round_accuracies", "dropped",
                                             "global_weights_sha256", "seconds")}))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    from host import cli_common
    sys.exit(cli_common.run_main(TOOL, main))
