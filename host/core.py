"""Pythonic access to the C core (host._tinylls, built by cffi from ccore/).

`CModel(model)` hands a `host.model.Model` to the C core the way a board gets it: the model file
bytes (host.modelfile.to_bytes) parsed in place by the C loader, tl_modelfile_load, so host and
board run the very same layer table. The model's weight, bias and LLS modulation arrays then
become views into those bytes: `train_step` updates `model.layers[i].weights` and `.bias` in
place and `host.model.weights_sha256(model)` sees the trained weights.
"""
from __future__ import annotations

import numpy as np

from host import modelfile
from host.model import Model, quantize_multiplier
from host.train import Result, layer_rates  # noqa: F401  (Result: the one result type, re-exported)

try:
    from host._tinylls import ffi, lib
except ImportError as exc:  # pragma: no cover - only when the extension was never built
    raise ImportError(f"cannot load the C core extension host._tinylls ({exc}); build it with "
                      "`pip install -e .` in the repository root") from exc

BASES = {"square": lib.TL_BASIS_SQUARE, "sine": lib.TL_BASIS_SINE, "random": lib.TL_BASIS_RANDOM}
VARIANTS = {"plain": lib.TL_LLS_PLAIN, "m": lib.TL_LLS_M, "mxm": lib.TL_LLS_MXM}
ROUNDINGS = {"stochastic": lib.TL_ROUND_STOCHASTIC, "nearest": lib.TL_ROUND_NEAREST}
KIND_CODES = {"conv": lib.TL_LAYER_CONV, "dwconv": lib.TL_LAYER_DWCONV, "fc": lib.TL_LAYER_FC,
              "avgpool": lib.TL_LAYER_AVGPOOL}
ACT_CODES = {"none": lib.TL_ACT_NONE, "relu": lib.TL_ACT_RELU, "relu6": lib.TL_ACT_RELU6,
             "leaky": lib.TL_ACT_LEAKY}


class TinyllsError(Exception):
    """A status code from the C core, with its name and what was being done."""

    def __init__(self, code: int, message: str = ""):
        self.code = int(code)
        self.reason = ffi.string(lib.tl_strerror(code)).decode()
        super().__init__(f"{message}: {self.reason} (code {code})" if message else
                         f"{self.reason} (code {code})")


def check(code: int, what: str) -> int:
    if code < 0:
        raise TinyllsError(code, what)
    return code


def _ptr(ctype: str, arr: np.ndarray | None):
    return ffi.NULL if arr is None else ffi.cast(ctype, arr.ctypes.data)


class CModel:
    """A `Model` bound to the C core with a training configuration and its own arena."""

    def __init__(self, model: Model, *, basis: str = "square", variant: str = "plain",
                 rounding: str = "stochastic", seed: int = 0, basis_seed: int = 0, tau: float = 0.5):
        for name, table, value in (("basis", BASES, basis), ("variant", VARIANTS, variant),
                                   ("rounding", ROUNDINGS, rounding)):
            if value not in table:
                raise ValueError(f"unknown {name} {value!r} (known: {', '.join(table)})")
        self.model = model
        n = len(model.layers)
        if not 1 <= n <= lib.TL_MAX_LAYERS:
            raise ValueError(f"model {model.name!r}: {n} layers, the core supports 1..{lib.TL_MAX_LAYERS}")
        if variant != "plain":      # the identity modulation: LLS-M/MxM start as plain LLS
            for layer in model.layers[:-1]:
                if layer.trainable and layer.has_weights and layer.lls_m is None:
                    layer.lls_m = (np.full(model.classes, 1 << 16, np.int32) if variant == "m"
                                   else (np.eye(model.classes, dtype=np.int32) << 16))
        # The layer table is the one a board builds: tl_modelfile_load on the model file's bytes,
        # parsed in place in a 4-byte aligned buffer that then holds the trained tensors.
        try:
            blob = modelfile.to_bytes(model)
        except modelfile.ModelFileError:
            blob = None                              # the direct table below names the problem
        status = lib.TL_ERR_MODEL
        if blob is not None:
            self._blob = np.zeros((len(blob) + 3) // 4, np.uint32).view(np.uint8)[: len(blob)]
            self._blob[:] = np.frombuffer(blob, np.uint8)
            self._layers = ffi.new("tl_layer[]", n)
            self._m = ffi.new("tl_model *")
            status = lib.tl_modelfile_load(ffi.cast("uint8_t *", self._blob.ctypes.data), len(blob),
                                           self._layers, n, self._m)
        self.load_status = int(status)               # tl_modelfile_load's answer (TL_OK: as a board)
        self.layer_table = "modelfile"               # how the layer table was built
        if status != lib.TL_OK:
            self.layer_table, self._blob = "direct", None
            self._fill_direct(model, variant)
        self._m.cfg.basis = BASES[basis]
        self._m.cfg.variant = VARIANTS[variant]
        self._m.cfg.rounding = ROUNDINGS[rounding]
        self._m.cfg.seed = seed & 0xFFFFFFFF
        self._m.cfg.basis_seed = basis_seed & 0xFFFFFFFF
        self._m.cfg.inv_tau_q8 = int(round(256 / tau))
        check(lib.tl_model_prepare(self._m), f"model {model.name!r}")
        # train in place: the model's tensors become views of the loaded file's
        for i, layer in enumerate(model.layers if self._blob is not None else ()):
            L = self._layers[i]
            if layer.has_weights:
                layer.weights = self._view(L.weights, np.int8, np.shape(layer.weights))
                layer.bias = self._view(L.bias, np.int32, (layer.out_c,))
            if L.lls_m != ffi.NULL:
                layer.lls_m = self._view(L.lls_m, np.int32, np.shape(layer.lls_m))
        self.arena_bytes = check(lib.tl_model_arena_bytes(self._m), "planning the arena")
        self.bp_activation_bytes = check(lib.tl_model_bp_activation_bytes(self._m), "planning")
        self.max_layer_bytes = check(lib.tl_model_max_layer_bytes(self._m), "planning")
        # the planner's arena (what a board needs) plus the host fast paths' scratch, so single
        # steps from Python take the same x86 kernels as the epoch runner (the same bits either way)
        self._work_bytes = self.arena_bytes + check(lib.tl_model_fast_scratch_bytes(self._m), "planning")
        self._arena_np, self._arena = self._new_arena()
        self._res = ffi.new("tl_result *")

    def _new_arena(self):
        """(backing array, tl_ctx) of one working arena: planner arena + host fast-path scratch."""
        arena_np = np.zeros((self._work_bytes + 7) // 8, np.int64)
        arena = ffi.new("tl_ctx *")
        arena.buf = ffi.cast("void *", arena_np.ctypes.data)
        arena.size = self._work_bytes
        return arena_np, arena

    def _view(self, ptr, dtype, shape) -> np.ndarray:
        """The array at C pointer `ptr` inside the loaded file (a view: it shares the bytes)."""
        off = int(ffi.cast("uintptr_t", ptr)) - self._blob.ctypes.data
        count = int(np.prod(shape))
        return self._blob[off: off + count * np.dtype(dtype).itemsize].view(dtype).reshape(shape)

    # ------------------------------------------------------------------ struct filling
    # Only for models the board's loader refuses but the core runs (tl_modelfile_load checks
    # kernel windows against the unpadded input: k <= in + pad_top, which small MobileNets such as
    # 32x32 break in their last stride-2 blocks); every other model takes the loader's table.
    def _fill_direct(self, model: Model, variant: str) -> None:
        n = len(model.layers)
        self._keep: list = []                         # arrays the C structs point into
        self._layers = ffi.new("tl_layer[]", n)
        for i, layer in enumerate(model.layers):
            self._fill(self._layers[i], layer, i == n - 1, variant, model.classes)
        self._m = ffi.new("tl_model *")
        self._m.n_layers = n
        self._m.layers = self._layers
        self._m.classes = model.classes
        self.set_learning_rates(layer_rates(model))

    def _arr(self, values, dtype) -> np.ndarray:
        a = np.ascontiguousarray(values, dtype=dtype)
        self._keep.append(a)
        return a

    def _fill(self, L, layer, is_last: bool, variant: str, classes: int) -> None:
        L.kind = KIND_CODES[layer.kind]
        L.act = ACT_CODES[layer.act]
        L.in_h, L.in_w, L.in_c = layer.in_shape
        L.out_h, L.out_w, L.out_c = layer.out_shape
        L.k_h, L.k_w = layer.kernel
        L.stride_h, L.stride_w = layer.stride
        L.pad_top, L.pad_left = layer.pad
        L.in_zp, L.out_zp = layer.in_zp, layer.out_zp
        L.act_min, L.act_max = layer.act_range()
        if layer.act == "leaky":
            L.leaky_mult, L.leaky_shift = quantize_multiplier(layer.leaky_alpha)
        L.single_rounding = int(bool(getattr(layer, "single_rounding", False)))
        L.trainable = int(bool(layer.trainable) and layer.has_weights)
        if not layer.has_weights:
            return
        # train in place: the model's own arrays must be contiguous with the C types
        layer.weights = np.ascontiguousarray(layer.weights, np.int8)
        layer.bias = np.ascontiguousarray(layer.bias, np.int32)
        self._keep += [layer.weights, layer.bias]
        L.weights = _ptr("int8_t *", layer.weights)
        L.bias = _ptr("int32_t *", layer.bias)
        # the integers derived from the float scales: one definition, shared with the model files
        # (channel factors too large for a quantized multiplier, e.g. dead channels, become 0)
        d = modelfile.derived_quant(layer, is_last)
        L.out_mult = _ptr("int32_t *", self._arr(d["out_mult"], np.int32))
        L.out_shift = _ptr("int32_t *", self._arr(d["out_shift"], np.int32))
        if not L.trainable:
            return
        for name in ("upd_mult", "upd_shift", "bupd_mult", "bupd_shift"):
            setattr(L, name, _ptr("int32_t *", self._arr(d[name], np.int32)))
        if is_last:
            L.logit_mult, L.logit_shift = d["logit_mult"], d["logit_shift"]
        elif variant != "plain":
            layer.lls_m = np.ascontiguousarray(layer.lls_m, np.int32)
            self._keep.append(layer.lls_m)
            L.lls_m = _ptr("int32_t *", layer.lls_m)

    def set_learning_rates(self, rates) -> None:
        """Per layer (lr_mult, lr_shift, lls_m_lr_mult, lls_m_lr_shift), as host.train.layer_rates
        gives them (a board's SET_LR); frozen layers keep theirs (never used)."""
        for i, (mult, shift, m_mult, m_shift) in enumerate(rates):
            L = self._layers[i]
            if L.trainable:
                L.lr_mult, L.lr_shift, L.lls_m_lr_mult, L.lls_m_lr_shift = mult, shift, m_mult, m_shift

    def refresh_learning_rates(self) -> None:
        """Re-read every layer's `lr` / `lls_m_lr` from the model (for learning-rate schedules)."""
        self.set_learning_rates(layer_rates(self.model))

    # ------------------------------------------------------------------ running
    def _input(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x)
        if x.dtype != np.int8:
            raise TypeError(f"input must be int8 (use Model.quantize_input on uint8 pixels), got {x.dtype}")
        want = self.model.input_shape
        if x.size != int(np.prod(want)):
            raise TinyllsError(lib.TL_ERR_SHAPE, f"input has shape {x.shape}, the model expects {want}")
        return x

    def _result(self) -> Result:
        r = self._res
        n = r.n_layers
        loss = np.array([r.local_loss_q16[i] for i in range(n)], np.float64)
        loss = np.where(loss < 0, np.nan, loss / 65536.0)
        return Result(pred=int(r.pred),
                      logits=np.array([r.logits[c] for c in range(self.model.classes)], np.int8),
                      local_pred=np.array([r.local_pred[i] for i in range(n)], np.int64),
                      local_loss=loss)

    def infer(self, x: np.ndarray, with_local: bool = False) -> Result:
        x = self._input(x)
        check(lib.tl_model_infer(self._m, self._arena, ffi.cast("int8_t *", x.ctypes.data),
                                 int(with_local), self._res), "inference")
        return self._result()

    def infer_many(self, x: np.ndarray, with_local: bool = True, threads: int = 1):
        """Inference on n inputs (n, H, W, C) int8 in one C call (tl_host_infer_many: the samples
        split over `threads` C threads, each with its own arena; the model is only read), exactly
        what per-sample `infer(x[j], with_local)` gives. Returns predictions (n,), int8 logits
        (n, classes) and local head predictions (n, n_layers), -1 where none."""
        x = np.ascontiguousarray(x)
        if x.dtype != np.int8 or x.shape[1:] != tuple(self.model.input_shape):
            raise TinyllsError(lib.TL_ERR_SHAPE, f"inputs are {x.dtype} {x.shape}, the model expects int8 "
                                                 f"(n, {', '.join(map(str, self.model.input_shape))})")
        n, layers, classes = len(x), len(self.model.layers), self.model.classes
        preds = np.zeros(n, np.int32)
        logits = np.zeros((n, classes), np.int32)
        local = np.full((n, layers), -1, np.int32)
        if n:
            check(lib.tl_host_infer_many(self._m, ffi.cast("int8_t *", x.ctypes.data), n, max(1, int(threads)),
                                         int(with_local), _ptr("int32_t *", preds), _ptr("int32_t *", logits),
                                         _ptr("int32_t *", local) if with_local else ffi.NULL), "inference")
        return preds.astype(np.int64), logits.astype(np.int8), local.astype(np.int64)

    def infer_exit(self, x: np.ndarray, first_layer: int = 0, threshold_q16: int | None = None):
        """Early-exit inference (tl_model_infer_exit): stops after the first hidden layer >=
        first_layer whose LLS head's largest local probability (Q16) is >= threshold_q16 (None:
        never, TL_EXIT_NEVER_Q16). Returns (Result, exit layer, conf_q16 per layer: -1 where no
        head was evaluated)."""
        x = self._input(x)
        thr = lib.TL_EXIT_NEVER_Q16 if threshold_q16 is None else int(threshold_q16)
        n = len(self.model.layers)
        exit_layer = ffi.new("int32_t *")
        conf = np.full(n, -1, np.int32)
        check(lib.tl_model_infer_exit(self._m, self._arena, ffi.cast("int8_t *", x.ctypes.data), int(first_layer),
                                      thr, self._res, exit_layer, _ptr("int32_t *", conf)), "early-exit inference")
        return self._result(), int(exit_layer[0]), conf.astype(np.int64)

    def head_pool(self, layer: int) -> int:
        """The LLS pooling grid edge p of a layer as tl_model_prepare chose it (0: no head)."""
        return int(self._layers[layer].pool)

    def train_step(self, x: np.ndarray, label: int) -> Result:
        x = self._input(x)
        if not 0 <= int(label) < self.model.classes:
            raise TinyllsError(lib.TL_ERR_LABEL, f"label {label} with {self.model.classes} classes")
        check(lib.tl_model_train_step(self._m, self._arena, ffi.cast("int8_t *", x.ctypes.data),
                                      int(label), self._res), "training step")
        return self._result()

    def update_preview(self, layer: int, layer_input: np.ndarray, label: int):
        """The update (before rounding, in LSB, as floats) train_step would apply to one layer."""
        L = self.model.layers[layer]
        x = np.ascontiguousarray(layer_input, np.int8)
        dw = np.zeros(L.weights.size, np.int64)
        db = np.zeros(L.out_c, np.int64)
        check(lib.tl_layer_update_preview(self._m, layer, self._arena, ffi.cast("int8_t *", x.ctypes.data),
                                          label, ffi.cast("int64_t *", dw.ctypes.data),
                                          ffi.cast("int64_t *", db.ctypes.data)), f"preview of layer {layer}")
        return dw.reshape(L.weights.shape) / 65536.0, db / 65536.0

    def layer_outputs(self, x: np.ndarray) -> list[np.ndarray]:
        """Every layer's int8 output for one input (inference only, weights untouched)."""
        outs, cur = [], self._input(x)
        for i, layer in enumerate(self.model.layers):
            out = np.zeros(layer.out_shape, np.int8)
            check(lib.tl_layer_forward(ffi.addressof(self._layers, i), ffi.cast("int8_t *", cur.ctypes.data),
                                       ffi.cast("int8_t *", out.ctypes.data)), f"forward of layer {i}")
            outs.append(out)
            cur = out
        return outs

    @property
    def config(self):
        """The C training configuration (tl_train_cfg) as the core sees it: what a board must be
        given (SET_CONFIG) to train like this model."""
        return self._m.cfg

    @property
    def step(self) -> int:
        return int(self._m.step)
