/* tinylls public API: every declaration the host binding sees.
 *
 * This file is plain C with no #include and no #if, and its enum values are literals, so that
 * host/_build_ffi.py can hand its text to cffi's cdef unchanged (cffi then checks every value
 * against the compiled library). C users include tinylls.h, which includes <stdint.h> first.
 *
 * Conventions (TensorFlow Lite's int8 quantization):
 *   real = scale * (q - zero_point). Activations are asymmetric int8 with a zero point;
 *   weights are symmetric int8 per output channel (zero point 0); biases are int32 with scale
 *   s_in * s_w[c]. A "quantized multiplier" (mult, shift) stands for the real number
 *   mult * 2^(shift - 31), mult in [2^30, 2^31) or 0. Tensors are NHWC, batch 1.
 *   Kernels take zero points, not TFLite's offsets (input_offset = -in_zp).
 */

/* ---------------------------------------------------------------- status codes */
typedef int32_t tl_status;
enum {
    TL_OK = 0,
    TL_ERR_ARG = -1,          /* a NULL pointer or a parameter out of its documented range */
    TL_ERR_ARENA = -2,        /* scratch arena smaller than tl_model_arena_bytes() */
    TL_ERR_SHAPE = -3,        /* tensor shapes that do not fit together */
    TL_ERR_LABEL = -4,        /* label >= number of classes, or negative */
    TL_ERR_MODEL = -5,        /* malformed model description */
    TL_ERR_UNSUPPORTED = -6,  /* a layer kind, activation or option this build does not support */
    TL_ERR_QUANT = -7,        /* quantization parameter out of range (shift, zero point, multiplier) */
    TL_ERR_TRUNCATED = -8,    /* model file shorter than its header says */
    TL_ERR_CRC = -9,          /* model file body does not match its CRC32 */
    TL_ERR_VERSION = -10,     /* model file format version unknown to this build */
    TL_ERR_MAGIC = -11,       /* not a tinylls model file */
    TL_ERR_FROZEN = -12,      /* training asked of a model whose layers are all frozen */
    TL_ERR_RAM = -13          /* RAM for the trainable tensors smaller than the model file needs
                                 (tl_modelfile_load_rom reports the bytes it needs) */
};

/* ---------------------------------------------------------------- limits */
enum {
    TL_MAX_LAYERS = 64,       /* layers in one model */
    TL_MAX_CLASSES = 32,      /* classes of the classifier and of every LLS local head */
    TL_LLS_MAX_T = 2304       /* longest pooled, flattened LLS vector (256 channels x 3 x 3) */
};

/* ---------------------------------------------------------------- enums */
enum {                        /* tl_layer.kind */
    TL_LAYER_CONV = 1,        /* standard convolution, k_h x k_w, any stride / padding */
    TL_LAYER_DWCONV = 2,      /* depthwise convolution, depth multiplier 1 */
    TL_LAYER_FC = 3,          /* fully connected on the flattened (NHWC) input */
    TL_LAYER_AVGPOOL = 4      /* average pooling, k_h x k_w window, TFLite int8 semantics */
};
enum {                        /* tl_layer.act: fused activation after requantization */
    TL_ACT_NONE = 0,
    TL_ACT_RELU = 1,
    TL_ACT_RELU6 = 2,
    TL_ACT_LEAKY = 3          /* negative accumulators scaled by (leaky_mult, leaky_shift) first */
};
enum {                        /* tl_train_cfg.basis */
    TL_BASIS_SQUARE = 0,      /* sign(sin(f_c t)), values in {-1, 0, +1}: no multiplications */
    TL_BASIS_SINE = 1,        /* sin(f_c t) in Q15 */
    TL_BASIS_RANDOM = 2       /* fixed pseudo-random +-1 from (basis_seed, c, t) */
};
enum {                        /* tl_train_cfg.variant */
    TL_LLS_PLAIN = 0,
    TL_LLS_M = 1,             /* trainable modulation vector per layer (classes) */
    TL_LLS_MXM = 2            /* trainable classes x classes matrix per layer */
};
enum {                        /* tl_train_cfg.rounding */
    TL_ROUND_STOCHASTIC = 0,  /* unbiased: keeps sub-LSB progress in expectation */
    TL_ROUND_NEAREST = 1
};

/* ---------------------------------------------------------------- kernels */
typedef struct {
    int32_t n, h, w, c;
} tl_dims;

typedef struct {
    int32_t in_zp;                 /* input zero point, [-128, 127] */
    int32_t out_zp;                /* output zero point, [-128, 127] */
    int32_t stride_h, stride_w;    /* >= 1 */
    int32_t pad_top, pad_left;     /* leading padding; trailing padding follows from the shapes */
    int32_t act_min, act_max;      /* clamp in the output domain, -128 <= min <= max <= 127 */
    int32_t single_rounding;       /* 0: TFLite reference double rounding (tl_requantize);
                                      1: single rounding (tl_requantize_single), as LiteRT's FC */
} tl_conv_params;

typedef struct {
    const int32_t *mult;           /* (out_c) quantized multipliers */
    const int32_t *shift;          /* (out_c) shifts, [-31, 30] */
} tl_quant;

/* TFLite's MultiplyByQuantizedMultiplier: saturating rounding doubling high multiply, then a
 * rounding (half away from zero) right shift. Exact for every int32 x and shift in [-31, 30]. */
int32_t tl_requantize(int32_t x, int32_t mult, int32_t shift);
/* Single rounding (TFLITE_SINGLE_ROUNDING, ruy): (x * mult + 2^(30 - shift)) >> (31 - shift),
 * rounded half up, saturated to int32. */
int32_t tl_requantize_single(int32_t x, int32_t mult, int32_t shift);

/* in (1,H,W,Cin), filter (Cout,KH,KW,Cin), bias (Cout) or NULL, out (1,OH,OW,Cout). */
tl_status tl_conv_s8(const tl_conv_params *p, const tl_quant *q,
                     const tl_dims *in_dims, const int8_t *in,
                     const tl_dims *filter_dims, const int8_t *filter, const int32_t *bias,
                     const tl_dims *out_dims, int8_t *out);
/* in (1,H,W,C), filter (1,KH,KW,C), bias (C) or NULL, out (1,OH,OW,C). */
tl_status tl_dwconv_s8(const tl_conv_params *p, const tl_quant *q,
                       const tl_dims *in_dims, const int8_t *in,
                       const tl_dims *filter_dims, const int8_t *filter, const int32_t *bias,
                       const tl_dims *out_dims, int8_t *out);
/* 1x1 convolution, stride 1, no padding: in (1,H,W,Cin), filter (Cout,1,1,Cin). */
tl_status tl_pwconv_s8(const tl_conv_params *p, const tl_quant *q,
                       const tl_dims *in_dims, const int8_t *in,
                       const tl_dims *filter_dims, const int8_t *filter, const int32_t *bias,
                       const tl_dims *out_dims, int8_t *out);
/* in (in_n) flattened, filter (out_n, in_n), out (out_n); per-channel or per-tensor quant
 * (per_channel = 0 reads q->mult[0], q->shift[0] for every output). Stride/padding ignored. */
tl_status tl_fc_s8(const tl_conv_params *p, const tl_quant *q, int32_t per_channel,
                   int32_t in_n, const int8_t *in,
                   int32_t out_n, const int8_t *filter, const int32_t *bias, int8_t *out);
/* TFLite AVERAGE_POOL_2D int8 (input and output share scale and zero point): window k_h x k_w,
 * padded taps excluded from the count, rounding half away from zero, clamp to [act_min, act_max]. */
tl_status tl_avgpool_s8(const tl_conv_params *p, int32_t k_h, int32_t k_w,
                        const tl_dims *in_dims, const int8_t *in,
                        const tl_dims *out_dims, int8_t *out);
/* Standalone activations on n int8 values. ReLU/ReLU6 bounds are given in the quantized domain.
 * LeakyReLU follows TFLite's int8 LEAKY_RELU: identity part and alpha part each requantized. */
tl_status tl_clamp_s8(int32_t n, int8_t *x, int32_t act_min, int32_t act_max);
tl_status tl_leaky_relu_s8(int32_t n, const int8_t *in, int32_t in_zp, int32_t out_zp,
                           int32_t id_mult, int32_t id_shift,
                           int32_t alpha_mult, int32_t alpha_shift, int8_t *out);

/* ---------------------------------------------------------------- model */
/* A board keeps one of these per layer in RAM, so the small fields come first, as bytes and
 * halfwords (assign them only values already checked against their ranges, as the model file
 * loader does; tl_model_prepare checks the ranges again). */
typedef struct {
    int8_t kind;                   /* TL_LAYER_* */
    int8_t act;                    /* TL_ACT_* */
    int8_t single_rounding;        /* requantize with single rounding (imported LiteRT FC layers) */
    int8_t trainable;              /* training: 0 frozen, 1 trained by LLS (hidden) or cross-entropy (last) */
    int8_t leaky_shift;            /* the shifts, [-31, 30], of the scalar quantized multipliers */
    int8_t lr_shift;               /*   leaky_mult, lr_mult, logit_mult and lls_m_lr_mult (below) */
    int8_t logit_shift;
    int8_t lls_m_lr_shift;
    int16_t in_zp, out_zp;         /* [-128, 127] */
    int16_t act_min, act_max;      /* output clamp, quantized domain */
    int32_t in_h, in_w, in_c;      /* input tensor (1, in_h, in_w, in_c) */
    int32_t out_h, out_w, out_c;   /* output tensor; FC: out_h = out_w = 1 */
    int32_t k_h, k_w;              /* kernel (conv, dwconv, avgpool); FC: 1, 1 */
    int32_t stride_h, stride_w;
    int32_t pad_top, pad_left;
    int32_t leaky_mult;            /* TL_ACT_LEAKY: slope as a quantized multiplier (leaky_mult, leaky_shift) */
    int8_t *weights;               /* conv (out_c,k_h,k_w,in_c); dwconv (k_h,k_w,out_c); fc (out_c,in_c) */
    int32_t *bias;                 /* (out_c), scale s_in * s_w[c] */
    const int32_t *out_mult;       /* (out_c) requantization: s_in * s_w[c] / s_out */
    const int32_t *out_shift;      /* (out_c) */
    /* training (ignored by inference) */
    const int32_t *upd_mult;       /* (out_c) weight-update scale, lr excluded: see tl_lls_update.c */
    const int32_t *upd_shift;      /* (out_c) */
    const int32_t *bupd_mult;      /* (out_c) bias-update scale, lr excluded */
    const int32_t *bupd_shift;     /* (out_c) */
    int32_t lr_mult;               /* this layer's learning rate as a quantized multiplier (lr_mult, lr_shift) */
    int32_t logit_mult;            /* last layer: s_out as a quantized multiplier (logit_mult, logit_shift;
                                      softmax input) */
    int32_t *lls_m;                /* LLS-M (classes) / LLS-MxM (classes*classes) in Q16, or NULL */
    int32_t lls_m_lr_mult;         /* learning rate of lls_m (lls_m_lr_mult, lls_m_lr_shift) */
    int32_t pool;                  /* LLS pooling grid edge p (pooled length out_c*p*p); set by tl_model_prepare */
    /* camera adaptation (tl_adapt.c; model file version 2, FLAG_ADAPT), NULL elsewhere */
    const int32_t *adapt_ref;      /* (2 * out_c) reference accumulator mean, then std in Q8 */
    int32_t *adapt_mult;           /* (out_c) writable out_mult: the same array out_mult points to */
    int32_t *adapt_shift;          /* (out_c) writable out_shift */
} tl_layer;

typedef struct {
    int32_t basis;                 /* TL_BASIS_* */
    int32_t variant;               /* TL_LLS_* */
    int32_t rounding;              /* TL_ROUND_* */
    uint32_t seed;                 /* stochastic rounding stream */
    uint32_t basis_seed;           /* TL_BASIS_RANDOM */
    int32_t inv_tau_q8;            /* 1/tau in Q8 (tau 0.5 -> 512) */
} tl_train_cfg;

typedef struct {
    int32_t n_layers;
    tl_layer *layers;              /* (n_layers) */
    int32_t classes;               /* output size of the last layer */
    tl_train_cfg cfg;
    uint32_t step;                 /* training steps taken; advances the rounding stream */
    int32_t arena_bytes;           /* the arena plan, set by tl_model_prepare; 0: not prepared */
} tl_model;

typedef struct {
    int32_t n_layers;
    int32_t pred;                          /* classifier argmax */
    int32_t local_pred[64];                /* (TL_MAX_LAYERS) LLS head argmax per layer, -1 if none */
    int32_t local_loss_q16[64];            /* (TL_MAX_LAYERS) local cross-entropy, Q16; -1 if none */
    int32_t logits[32];                    /* (TL_MAX_CLASSES) classifier output, int8 values */
} tl_result;

typedef struct {
    void *buf;                     /* caller-owned scratch, at least tl_model_arena_bytes() */
    int32_t size;
} tl_ctx;

/* Checks every layer (shapes chain, kinds, quant ranges, classes) and fills derived fields
 * (pool, arena_bytes): prepare once, step many. Must be called before the calls below and again
 * after any change to the model's shape or quantization fields (they are not re-validated per
 * step); the calls below return TL_ERR_ARG for a model that is not prepared. */
tl_status tl_model_prepare(tl_model *m);
/* Exact scratch bytes tl_model_train_step / tl_model_infer need; < 0 is an error code. The plan
 * includes a place for the model input (below), whether the caller stages it there or not. */
int32_t tl_model_arena_bytes(const tl_model *m);
/* Extra bytes past tl_model_arena_bytes() in which this build's host fast paths keep their working
 * buffers (x86-64: the 1x1 convolution's packed weights and the many-channel training update,
 * ~290 KB), instead of on the stack: a caller that makes the arena
 * tl_model_arena_bytes() + this many bytes gets them; with a smaller arena the portable path
 * runs, with the same result bits. 0 on builds without such paths (microcontrollers). */
int32_t tl_model_fast_scratch_bytes(const tl_model *m);
/* Byte offset in the arena (8-aligned) where the input tensor may be staged: neither layer 0's
 * output nor its training scratch reaches [offset, offset + input bytes), so input = arena + offset
 * is valid for tl_model_infer / tl_model_train_step. Layer 1 overwrites it: stage it again before
 * every step. < 0 is an error code. */
int32_t tl_model_input_offset(const tl_model *m);
/* Bytes a backprop trainer would keep: the input plus every layer's output (int8). */
int32_t tl_model_bp_activation_bytes(const tl_model *m);
/* Largest single layer's input + output bytes (the O(n_max) yardstick). */
int32_t tl_model_max_layer_bytes(const tl_model *m);

/* Bytes of a layer's input tensor (in_h * in_w * in_c) and output tensor (out_h * out_w * out_c). */
int32_t tl_layer_in_bytes(const tl_layer *L);
int32_t tl_layer_out_bytes(const tl_layer *L);
/* One layer's forward pass: in is its input tensor, out its output tensor (may not overlap). */
tl_status tl_layer_forward(const tl_layer *L, const int8_t *in, int8_t *out);
/* Forward pass; with with_local != 0 also every layer's LLS local prediction. */
tl_status tl_model_infer(tl_model *m, const tl_ctx *arena, const int8_t *input, int32_t with_local,
                         tl_result *res);
/* One LLS training step on one labelled sample: each trainable layer updates right after its own
 * forward pass. On error nothing has been written to the weights. */
tl_status tl_model_train_step(tl_model *m, const tl_ctx *arena, const int8_t *input, int32_t label,
                              tl_result *res);
/* Layers [lo, hi) of one forward pass (train = 0) or training step (train != 0, label in
 * [0, classes)): the layer loop of tl_model_infer / tl_model_train_step, for callers that split
 * a step across threads (the host runner's layer pipeline gives each stage its own arena).
 *   in       layer lo's input tensor (anywhere; for lo = 0 the model input)
 *   with_local  also run the local heads of hidden layers that do not train
 *   res      this range's local_pred / local_loss_q16 entries, and pred / logits when hi is
 *            n_layers; nothing else is written
 *   out      receives layer hi - 1's output tensor, which lies in the arena
 * The rounding stream is the one of step m->step, which this call does not advance. */
tl_status tl_model_step_layers(tl_model *m, const tl_ctx *arena, int32_t lo, int32_t hi, const int8_t *in,
                               int32_t label, int32_t train, int32_t with_local, tl_result *res,
                               const int8_t **out);

/* The learning signal of one layer without touching it: the update, before rounding, that
 * train_step would apply to its weights (n_weights values) and bias (out_c values), in units of
 * 2^-16 LSB. input: the layer's input tensor. For tests of the rule against a float reference. */
tl_status tl_layer_update_preview(const tl_model *m, int32_t layer, const tl_ctx *arena,
                                  const int8_t *layer_input, int32_t label,
                                  int64_t *dw_q16, int64_t *db_q16);

/* Basis element b_c[t] of the configured basis for a local head of `classes` classes, in Q15
 * (square and random give -32768/0/+32767 scaled as -1/0/+1 -> -32767, 0, 32767). */
int32_t tl_basis_q15(int32_t basis, uint32_t basis_seed, int32_t c, int32_t classes, int32_t t);

const char *tl_strerror(tl_status s);
const char *tl_version(void);

/* ---------------------------------------------------------------- model files */
/* Parses a tinylls model file (see host/modelfile.py for the byte layout) held in RAM, in place:
 * layer weights, biases and LLS modulation point into `blob` (so training changes the blob) and
 * nothing is copied. blob must be 4-byte aligned. layers: caller storage for max_layers entries.
 * Every field is validated (size, magic, version, CRC32, kinds, shapes, quant ranges); on any
 * error *out is left untouched and a specific TL_ERR_* code is returned. On success m is ready
 * (tl_model_prepare has run). */
tl_status tl_modelfile_load(uint8_t *blob, int32_t size, tl_layer *layers, int32_t max_layers,
                            tl_model *out);
/* The same checks on a model file that stays in read-only memory (flash, a const array): only what
 * training writes - weights, bias and LLS modulation of the trainable layers - is copied to `ram`
 * (4-byte aligned; per layer weights rounded up to 4 bytes, then bias, then lls_m), and those layers
 * point there; everything else (quantized multipliers, layer table, frozen layers' tensors) is read
 * from `blob` where it lies and never written. *ram_bytes (if not NULL) receives the bytes needed,
 * also when ram_cap is too small (TL_ERR_RAM), so a call with ram = NULL, ram_cap = 0 asks for the
 * size. A fresh call copies the file's initial values again. *out is left untouched on error. */
tl_status tl_modelfile_load_rom(const uint8_t *blob, int32_t size, uint8_t *ram, int32_t ram_cap,
                                int32_t *ram_bytes, tl_layer *layers, int32_t max_layers, tl_model *out);
/* CRC-32 (IEEE 802.3, reflected, init/xorout 0xFFFFFFFF), as zlib.crc32; crc = 0 to start. */
uint32_t tl_crc32(uint32_t crc, const uint8_t *data, int32_t n);

/* ---------------------------------------------------------------- checkpoints (tl_checkpoint.c)
 * The trained state survives power loss in a NOR flash region the board provides through tl_flash
 * (erase a sector -> every byte 0xFF; program may only clear bits, 1 -> 0, within one page; read).
 *
 * Layout: the region is cut in two equal slots A (offset 0) and B (offset half, rounded down to a
 * sector), independent of the model. A slot is [commit record: first TL_CKPT_RECORD_BYTES bytes of
 * its first page][payload from offset page_bytes]. Payload: per layer (all n_layers) i32 lr_mult,
 * lr_shift, lls_m_lr_mult, lls_m_lr_shift; then per trainable layer weights (int8), bias (int32 LE),
 * lls_m (int32 LE, lls_variant's length) where present. The commit record (28 u32 LE): magic
 * TL_CKPT_MAGIC, version, generation, payload_bytes, payload_crc, step, epoch, index, model_size,
 * model_crc, basis, variant, rounding, seed, basis_seed, inv_tau_q8, lls_variant, every, n_layers,
 * tag[8], then crc32 of the 27 words before it.
 * Save (write order): the target is the slot not holding the newest valid checkpoint; erase its
 * sectors (the one holding its record first), program the payload page by page from the tensors
 * in RAM (no copy), read it back and compare with RAM, then program the commit record, read it back.
 * The other slot is never touched, so at every instant the previous checkpoint stays valid; the
 * new one is valid only once its record is complete (record CRC and payload CRC both check). */
enum {
    TL_CKPT_MAGIC = 1262701652,        /* "TLCK" little-endian (0x4B434C54) */
    TL_CKPT_VERSION = 1,
    TL_CKPT_RECORD_WORDS = 28,
    TL_CKPT_RECORD_BYTES = 112,
    TL_CKPT_MAX_PAGE = 256,            /* largest page_bytes: the writer's one stack buffer */
    TL_CKPT_TAG_WORDS = 8
};
enum {                                 /* tl_ckpt_slot.state */
    TL_CKPT_SLOT_BLANK = 0,            /* record area erased (never written, or erased for a save) */
    TL_CKPT_SLOT_VALID = 1,            /* record and payload CRCs check */
    TL_CKPT_SLOT_CORRUPT = 2           /* something written that does not check (torn save, bit flip) */
};
enum {                                 /* what a restore found (tl_ckpt_restore's *found) */
    TL_CKPT_NONE = 0,                  /* no flash, or both slots blank: the model is untouched */
    TL_CKPT_RESTORED = 1,              /* the newest valid slot was restored */
    TL_CKPT_ALL_CORRUPT = 2,           /* no valid slot, at least one corrupt: untouched (original) */
    TL_CKPT_OTHER_MODEL = 3            /* the newest valid slot belongs to another model or layout */
};
enum {                                 /* checkpoint errors (core range) */
    TL_ERR_FLASH = -14,                /* the flash callback failed, or a read-back differs */
    TL_ERR_FLASH_SIZE = -15            /* the state does not fit one slot */
};

typedef struct {
    uint32_t size;                     /* region bytes (a multiple of sector_bytes, >= 2 sectors) */
    uint32_t sector_bytes;             /* erase unit, power of two */
    uint32_t page_bytes;               /* program unit, power of two, TL_CKPT_RECORD_BYTES..TL_CKPT_MAX_PAGE,
                                          <= sector_bytes */
    /* addresses are region offsets; each returns 0 on success */
    int32_t (*erase)(void *user, uint32_t addr);                                  /* whole sector */
    int32_t (*program)(void *user, uint32_t addr, const uint8_t *data, int32_t n); /* within a page */
    int32_t (*read)(void *user, uint32_t addr, uint8_t *out, int32_t n);
    void *user;
} tl_flash;

/* Everything of a checkpoint but the tensors and rates. */
typedef struct {
    uint32_t generation;               /* save: set to the one written; restore: the one read */
    uint32_t step;                     /* training steps: the stochastic rounding stream position */
    uint32_t epoch, index;             /* data cursor: epoch, position in that epoch's order */
    uint32_t model_size, model_crc;    /* identity of the model file */
    tl_train_cfg cfg;
    int32_t lls_variant;               /* TL_LLS_* giving the length of the lls_m arrays */
    uint32_t every;                    /* automatic checkpoint interval in steps (0 off) */
    uint32_t tag[8];                   /* (TL_CKPT_TAG_WORDS) the host's description of the run, opaque */
} tl_ckpt_state;

typedef struct {
    int32_t state;                     /* TL_CKPT_SLOT_* */
    uint32_t generation, step, payload_crc, payload_bytes;
    uint32_t model_crc;
} tl_ckpt_slot;

/* Bytes of the payload for model m (lls_m counted with lls_variant); < 0 error. */
int32_t tl_ckpt_payload_bytes(const tl_model *m, int32_t lls_variant);
/* Reads both slots' records and checks their CRCs (the payload CRC too): slots[2]. */
tl_status tl_ckpt_scan(const tl_flash *f, tl_ckpt_slot *slots);
/* Writes m's trainable tensors, rates and st (step, cfg taken from st, not m) to the slot after
 * the newest valid one (slots: from tl_ckpt_scan, updated on return; st->generation receives the
 * new generation). On any error the previous checkpoint is still valid. */
tl_status tl_ckpt_save(const tl_flash *f, const tl_model *m, tl_ckpt_state *st, tl_ckpt_slot *slots);
/* Restores the newest valid slot if its identity (model_size, model_crc, n_layers, payload size)
 * matches st->model_size / model_crc and m: tensors, rates, cfg and step into m (prepared again),
 * the rest into st. *found: TL_CKPT_*. The payload CRC is checked before anything is written.
 * TL_CKPT_OTHER_MODEL leaves m alone but copies that checkpoint's tag into st->tag. */
tl_status tl_ckpt_restore(const tl_flash *f, tl_model *m, tl_ckpt_state *st, int32_t lls_variant,
                          tl_ckpt_slot *slots, int32_t *found);
/* Erases both slots' record sectors (forgets every checkpoint). */
tl_status tl_ckpt_erase(const tl_flash *f, tl_ckpt_slot *slots);

/* ================================================================ camera adaptation (tl_adapt.c)
 * Label-free adaptation to a new camera by per-channel statistic matching (issue 16). For a conv,
 * dwconv or fc layer: the statistics of its int32 accumulator (bias included, before
 * requantization) per output channel over every output position of every image fed, accumulated
 * by a plain reference loop in caller-owned scratch; then the per-channel update of the bias and
 * requantization multiplier that maps the new mean/std onto the reference ones (int8 weights and
 * the output scale untouched). Integer only, no malloc; host and board run this same code. */
enum {
    TL_ADAPT_G_FRAC = 28,              /* the per-channel gain g = std_ref / std_new is in Q28 */
    TL_ADAPT_STAT_BYTES = 24           /* scratch per output channel: int64 sum, 128-bit sum of squares */
};
/* Scratch bytes for one layer's statistics (24 * out_c); < 0 for a layer without weights. */
int32_t tl_adapt_stats_bytes(const tl_layer *L);
/* Zeroes the statistics. */
tl_status tl_adapt_stats_reset(const tl_layer *L, void *stats);
/* Adds one image: in is the layer's input tensor (the previous layer's output). */
tl_status tl_adapt_stats_add(const tl_layer *L, const int8_t *in, void *stats);
/* Mean and population std of each channel's accumulator over n_images images: mean in accumulator
 * units, rounded half away from zero; std in Q8, floor(sqrt(floor(var * 2^16))), saturated at
 * 2^31 - 1. TL_ERR_ARG when n_images * positions exceeds 2^31 - 1. */
tl_status tl_adapt_stats_finish(const tl_layer *L, const void *stats, int32_t n_images, int32_t *mean,
                                int32_t *std_q8);
/* g = std_ref / std_new in Q28, rounded, clamped to [2^25, 2^31 - 1] (1/8 .. 8); exactly 2^28 when
 * either std is below 256 (one accumulator LSB). */
int32_t tl_adapt_gain_q28(int32_t ref_std_q8, int32_t new_std_q8);
/* The update of one layer's channels, written to bias / out_mult / out_shift (out_c each: the
 * caller's writable copies, e.g. the layer's own arrays in RAM): mult' = round(mult * g / 2^28)
 * renormalised into [2^30, 2^31) with its shift (a channel whose shift would leave [-31, 30] keeps
 * g = 1; mult 0 stays 0), bias' = bias + round(mean_ref * 2^28 / g) - mean_new,
 * clamped to the loader's bound. Statistics from tl_adapt_stats_finish. */
tl_status tl_adapt_apply(const tl_layer *L, const int32_t *ref_mean, const int32_t *ref_std_q8,
                         const int32_t *new_mean, const int32_t *new_std_q8, int32_t *bias, int32_t *out_mult,
                         int32_t *out_shift);
/* The same on a loaded model, in its arena (a board's schedule, host/adapt.py's `board_adapt`):
 * layer must carry statistics in the model file (tl_layer.adapt_ref) and not be the last one;
 * input_in_arena != 0 when the model input is staged in the arena (tl_model_input_offset), as on
 * the boards. tl_adapt_plan: where, in an arena of arena_size bytes, the layer's statistics stay
 * while layers 0 .. layer-1 run (*stats_off: a gap of the plan they never reach; else 0, the
 * bottom of the arena, with those layers' even outputs shifted above the statistics when every
 * layer's input and output still fit; else past the plan) and where APPLY's mean/std go
 * (*tmp_off); TL_ERR_ARENA when there is no room. tl_adapt_extra_bytes: bytes past
 * tl_model_arena_bytes that layer needs (0: the statistics fit inside the plan).
 * tl_adapt_begin zeroes the statistics; tl_adapt_feed runs layers 0 .. layer-1 (as adapted so far,
 * the portable kernels: tl_layer_forward) on one model input and adds layer's statistics;
 * tl_adapt_finish_apply turns n_images images' statistics into the update of the layer's bias,
 * adapt_mult and adapt_shift and prepares the model again. Other arena contents do not survive. */
tl_status tl_adapt_plan(const tl_model *m, int32_t layer, int32_t input_in_arena, int32_t arena_size,
                        int32_t *stats_off, int32_t *tmp_off);
int32_t tl_adapt_extra_bytes(const tl_model *m, int32_t layer, int32_t input_in_arena);
tl_status tl_adapt_begin(const tl_model *m, const tl_ctx *arena, int32_t layer, int32_t input_in_arena);
tl_status tl_adapt_feed(const tl_model *m, const tl_ctx *arena, int32_t layer, int32_t input_in_arena,
                        const int8_t *input);
tl_status tl_adapt_finish_apply(tl_model *m, const tl_ctx *arena, int32_t layer, int32_t input_in_arena,
                                int32_t n_images);

/* ---------------------------------------------------------------- early exit (tl_early_exit.c)
 * Every hidden layer already has a classifier: its LLS local head (pool, normalise, project on the
 * basis, softmax). Early-exit inference runs the layers in order and stops after the first
 * eligible layer whose head is confident enough, answering that head's class; otherwise the last
 * layer (the classifier) answers as in tl_model_infer.
 *   confidence  the largest probability of the head's local softmax, Q16 (65536 = 1.0): the same
 *               softmax the training head computes, so the answer is that layer's local_pred
 *               (why this and not a logit margin: tl_lls.c, tl_lls_head_confidence)
 *   eligible    hidden layers first_layer <= i < n_layers - 1 that are not average pooling and
 *               whose head is not dead (all outputs at the zero point: no confidence)
 *   exit        at the first eligible layer with confidence >= threshold_q16 */
enum {
    TL_EXIT_NEVER_Q16 = 65537         /* a threshold no head reaches (the largest confidence is
                                         65536): the full forward pass, tl_model_infer's answer */
};
/* first_layer in [0, n_layers - 1], threshold_q16 in [0, TL_EXIT_NEVER_Q16] (else TL_ERR_ARG).
 *   res        pred: the exit head's class or the classifier's; local_pred[i]: the prediction of
 *              every head evaluated (-1 elsewhere); logits: the classifier's int8 output, zeros
 *              when a head answered; local_loss_q16: -1 (no label)
 *   exit_layer the layer that answered (n_layers - 1: the classifier); may be NULL
 *   conf_q16   NULL, or n_layers entries: each evaluated head's confidence, -1 for layers not
 *              reached, not eligible or dead (with TL_EXIT_NEVER_Q16: every eligible layer's, in
 *              one forward pass, from which a host can replay any threshold)
 * Uses the arena as tl_model_infer does (an input staged at tl_model_input_offset works); the
 * model is only read. */
tl_status tl_model_infer_exit(tl_model *m, const tl_ctx *arena, const int8_t *input, int32_t first_layer,
                              int32_t threshold_q16, tl_result *res, int32_t *exit_layer, int32_t *conf_q16);
