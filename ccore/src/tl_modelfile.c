/* Model file loaders: tl_modelfile_load parses a tinylls model file held in RAM, in place (training
 * writes into the file); tl_modelfile_load_rom parses one that stays in flash and copies only what
 * training writes (weights, bias, lls_m of trainable layers) to a RAM buffer of exactly that size.
 *
 * The byte layout is specified once, in docs/modelfile.md (writer: host/modelfile.py). In short:
 *   16-byte file header  magic "TLLS", version, body_len, crc32(body)
 *   48-byte model header classes, input shape, input_zp, n_layers, table/data/host offsets
 *   layer table          n_layers entries of 40 little-endian words (LF_* below)
 *   (version 2 adds per-layer adaptation reference statistics: FLAG_ADAPT, LF_ADAPT_OFF)
 *   tensor area          [data_off, host_off): int8 weights, int32 bias and quantized multipliers
 *   host-only area       [host_off, end): JSON and float scales for the host; never read here
 *
 * Trust nothing: a file can be cut short, corrupted in flash, or crafted. Checks run in an order
 * that never reads a byte before proving it exists: size, magic, version, body length, CRC, then
 * every field. Offsets and counts are compared in uint32 with the subtraction on the side that
 * cannot wrap (count <= (end - off) / elem), so no check can overflow. Header fields are read
 * byte by byte (endianness- and alignment-proof); tensors are used where they lie, which needs a
 * little-endian core (Cortex-M, x86, RISC-V) and a 4-byte aligned blob - both are checked.
 */
#include "tinylls.h"
#include "tl_bytes.h"
#include "tl_layer.h"

enum {
    FORMAT_VERSION = 2,                 /* the newest; version 1 files (no adaptation data) are read too */
    FORMAT_VERSION_MIN = 1,
    FILE_HEADER_BYTES = 16,
    MODEL_HEADER_BYTES = 48,
    LAYER_TABLE_OFF = FILE_HEADER_BYTES + MODEL_HEADER_BYTES,
    LAYER_WORDS = 40,
    LAYER_ENTRY_BYTES = 4 * LAYER_WORDS,
    /* Largest tensor edge accepted. Kernels index with int32; with every edge <= 2^15 and the
     * element counts below checked in 64-bit arithmetic, no index can overflow. */
    MAX_DIM = 32768,
    MAX_TENSOR_ELEMS = 1 << 26,
    FLAG_TRAINABLE = 1,
    FLAG_SINGLE_ROUNDING = 2,
    FLAG_ADAPT = 4,                     /* version 2: the layer carries adaptation reference statistics */
    KNOWN_FLAGS_V1 = FLAG_TRAINABLE | FLAG_SINGLE_ROUNDING,
    KNOWN_FLAGS_V2 = KNOWN_FLAGS_V1 | FLAG_ADAPT
};

/* Model header words, as offsets into the file. */
enum {
    MH_CLASSES = 16, MH_IN_H = 20, MH_IN_W = 24, MH_IN_C = 28, MH_INPUT_ZP = 32, MH_N_LAYERS = 36,
    MH_TABLE_OFF = 40, MH_ENTRY_BYTES = 44, MH_DATA_OFF = 48, MH_HOST_OFF = 52, MH_HOST_LEN = 56,
    MH_JSON_LEN = 60
};

/* Layer table words (host/modelfile.py LAYER_FIELDS). */
enum {
    LF_KIND, LF_ACT, LF_FLAGS, LF_IN_H, LF_IN_W, LF_IN_C, LF_OUT_H, LF_OUT_W, LF_OUT_C, LF_K_H, LF_K_W,
    LF_STRIDE_H, LF_STRIDE_W, LF_PAD_TOP, LF_PAD_LEFT, LF_IN_ZP, LF_OUT_ZP, LF_ACT_MIN, LF_ACT_MAX,
    LF_LEAKY_MULT, LF_LEAKY_SHIFT, LF_LR_MULT, LF_LR_SHIFT, LF_LOGIT_MULT, LF_LOGIT_SHIFT,
    LF_LLS_M_LR_MULT, LF_LLS_M_LR_SHIFT, LF_LLS_M_LEN,
    LF_WEIGHTS_OFF, LF_BIAS_OFF, LF_OUT_MULT_OFF, LF_OUT_SHIFT_OFF, LF_UPD_MULT_OFF, LF_UPD_SHIFT_OFF,
    LF_BUPD_MULT_OFF, LF_BUPD_SHIFT_OFF, LF_LLS_M_OFF, LF_SCALES_OFF, LF_ADAPT_OFF, LF_RESERVED1
};

/* ---------------------------------------------------------------- range checks */

static int zp_ok(int32_t zp)
{
    return zp >= -128 && zp <= 127;
}

/* A section of count elements of elem bytes at off lies in [*lo, hi) and is 4-byte aligned; *lo
 * then moves to its end. The sections are laid out in file order (layer by layer: weights, bias,
 * the six multiplier and shift arrays, the LLS modulation), as host.modelfile writes them, so no
 * two can overlap: training writes weights, biases and modulation in place, and an overlap would
 * let it rewrite another layer's multipliers or shifts. Written so that no expression can wrap:
 * hi - off is only formed once off <= hi, and off + count * elem <= hi. */
static int section_ok(uint32_t off, uint32_t count, uint32_t elem, uint32_t *lo, uint32_t hi)
{
    if (off < *lo || off > hi || (off & 3u) != 0)
        return 0;
    if (count > (hi - off) / elem)
        return 0;
    *lo = off + count * elem;
    return 1;
}

/* Every int32 of a (mult, shift) pair of arrays is a valid quantized multiplier. */
static int quant_arrays_ok(const uint8_t *blob, uint32_t mult_off, uint32_t shift_off, int32_t n)
{
    for (int32_t c = 0; c < n; c++) {
        if (!tl_qmult_ok(tl_get_i32(blob + mult_off + 4u * (uint32_t)c), tl_get_i32(blob + shift_off + 4u * (uint32_t)c)))
            return 0;
    }
    return 1;
}

/* Output size must come from this input, kernel, stride and leading padding: every window
 * starts inside [-pad, in - 1] and keeps at least one real tap (pad < k), so no window is empty
 * and no tap index leaves [-pad, in + k). */
static int window_ok(int32_t in, int32_t out, int32_t k, int32_t stride, int32_t pad)
{
    /* in, out >= 1 were checked by the caller; int64 keeps every sum below exact. */
    if (k < 1 || stride < 1 || pad < 0 || pad >= k || out < 1 || (int64_t)k > (int64_t)in + pad)
        return 0;
    return (int64_t)(out - 1) * stride - pad <= (int64_t)in - 1;
}

/* ---------------------------------------------------------------- one layer */

static tl_status parse_layer(uint8_t *blob, uint32_t version, const uint8_t *e, uint32_t *next_off,
                             uint32_t host_off, int32_t classes, tl_layer *L)
{
    tl_layer z = {0};
    *L = z;
    const int32_t kind = tl_get_i32(e + 4 * LF_KIND), act = tl_get_i32(e + 4 * LF_ACT);
    uint32_t flags = tl_get_u32(e + 4 * LF_FLAGS);
    if (kind < TL_LAYER_CONV || kind > TL_LAYER_AVGPOOL || act < TL_ACT_NONE || act > TL_ACT_LEAKY)
        return TL_ERR_UNSUPPORTED;          /* checked before they go into their byte fields */
    L->kind = (int8_t)kind;
    L->act = (int8_t)act;
    const uint32_t known = version >= 2 ? (uint32_t)KNOWN_FLAGS_V2 : (uint32_t)KNOWN_FLAGS_V1;
    const uint32_t adapt_off = tl_get_u32(e + 4 * LF_ADAPT_OFF);   /* version 1: reserved, 0 */
    if ((flags & ~known) != 0 || (adapt_off != 0) != ((flags & FLAG_ADAPT) != 0) || tl_get_u32(e + 4 * LF_RESERVED1) != 0)
        return TL_ERR_MODEL;
    L->trainable = (flags & FLAG_TRAINABLE) ? 1 : 0;
    /* LiteRT's FULLY_CONNECTED rounds once where TFLite's reference rounds twice; an imported
     * model says which its layers need (host/tflite_import.py). */
    L->single_rounding = (flags & FLAG_SINGLE_ROUNDING) ? 1 : 0;

    L->in_h = tl_get_i32(e + 4 * LF_IN_H);
    L->in_w = tl_get_i32(e + 4 * LF_IN_W);
    L->in_c = tl_get_i32(e + 4 * LF_IN_C);
    L->out_h = tl_get_i32(e + 4 * LF_OUT_H);
    L->out_w = tl_get_i32(e + 4 * LF_OUT_W);
    L->out_c = tl_get_i32(e + 4 * LF_OUT_C);
    L->k_h = tl_get_i32(e + 4 * LF_K_H);
    L->k_w = tl_get_i32(e + 4 * LF_K_W);
    L->stride_h = tl_get_i32(e + 4 * LF_STRIDE_H);
    L->stride_w = tl_get_i32(e + 4 * LF_STRIDE_W);
    L->pad_top = tl_get_i32(e + 4 * LF_PAD_TOP);
    L->pad_left = tl_get_i32(e + 4 * LF_PAD_LEFT);
    const int32_t dims[6] = {L->in_h, L->in_w, L->in_c, L->out_h, L->out_w, L->out_c};
    for (int i = 0; i < 6; i++) {
        if (dims[i] < 1 || dims[i] > MAX_DIM)
            return TL_ERR_SHAPE;
    }
    int64_t in_n = (int64_t)L->in_h * L->in_w * L->in_c;
    int64_t out_n = (int64_t)L->out_h * L->out_w * L->out_c;
    if (in_n > MAX_TENSOR_ELEMS || out_n > MAX_TENSOR_ELEMS)
        return TL_ERR_SHAPE;
    if (!window_ok(L->in_h, L->out_h, L->k_h, L->stride_h, L->pad_top) ||
        !window_ok(L->in_w, L->out_w, L->k_w, L->stride_w, L->pad_left))
        return TL_ERR_SHAPE;

    switch (L->kind) {
    case TL_LAYER_CONV:
        break;
    case TL_LAYER_FC:
        if (L->out_h != 1 || L->out_w != 1 || L->k_h != 1 || L->k_w != 1 || L->stride_h != 1 ||
            L->stride_w != 1 || L->pad_top != 0 || L->pad_left != 0)
            return TL_ERR_SHAPE;
        break;
    default: /* TL_LAYER_DWCONV, TL_LAYER_AVGPOOL */
        if (L->in_c != L->out_c)
            return TL_ERR_SHAPE;
        break;
    }
    const int64_t n_weights = tl_layer_n_weights(L);
    if (n_weights > MAX_TENSOR_ELEMS)
        return TL_ERR_SHAPE;
    /* Worst case of the int32 accumulator before the bias: taps * |x - zp| * |w| <= taps * 255 * 128.
     * Bounding it (and the bias, below) keeps every kernel free of signed overflow for any input. */
    int64_t taps = L->kind == TL_LAYER_CONV ? (int64_t)L->k_h * L->k_w * L->in_c
                 : L->kind == TL_LAYER_DWCONV ? (int64_t)L->k_h * L->k_w
                 : L->kind == TL_LAYER_FC ? in_n : (int64_t)L->k_h * L->k_w;
    int64_t max_acc = taps * (L->kind == TL_LAYER_AVGPOOL ? 128 : 255 * 128);
    if (max_acc > 0x7FFFFFFF)
        return TL_ERR_SHAPE;

    /* checked here, before they go into their narrow tl_layer fields */
    const int32_t in_zp = tl_get_i32(e + 4 * LF_IN_ZP), out_zp = tl_get_i32(e + 4 * LF_OUT_ZP);
    const int32_t act_min = tl_get_i32(e + 4 * LF_ACT_MIN), act_max = tl_get_i32(e + 4 * LF_ACT_MAX);
    const int32_t leaky_shift = tl_get_i32(e + 4 * LF_LEAKY_SHIFT), lr_shift = tl_get_i32(e + 4 * LF_LR_SHIFT);
    const int32_t logit_shift = tl_get_i32(e + 4 * LF_LOGIT_SHIFT);
    const int32_t lls_m_lr_shift = tl_get_i32(e + 4 * LF_LLS_M_LR_SHIFT);
    L->leaky_mult = tl_get_i32(e + 4 * LF_LEAKY_MULT);
    L->lr_mult = tl_get_i32(e + 4 * LF_LR_MULT);
    L->logit_mult = tl_get_i32(e + 4 * LF_LOGIT_MULT);
    L->lls_m_lr_mult = tl_get_i32(e + 4 * LF_LLS_M_LR_MULT);
    if (!zp_ok(in_zp) || !zp_ok(out_zp) || act_min < -128 || act_min > act_max || act_max > 127)
        return TL_ERR_QUANT;
    /* TFLite int8 average pooling averages raw values: input and output share quantization. */
    if (L->kind == TL_LAYER_AVGPOOL && in_zp != out_zp)
        return TL_ERR_QUANT;
    if (!tl_qmult_ok(L->leaky_mult, leaky_shift) || !tl_qmult_ok(L->lr_mult, lr_shift) ||
        !tl_qmult_ok(L->logit_mult, logit_shift) || !tl_qmult_ok(L->lls_m_lr_mult, lls_m_lr_shift))
        return TL_ERR_QUANT;
    L->in_zp = (int16_t)in_zp;
    L->out_zp = (int16_t)out_zp;
    L->act_min = (int16_t)act_min;
    L->act_max = (int16_t)act_max;
    L->leaky_shift = (int8_t)leaky_shift;
    L->lr_shift = (int8_t)lr_shift;
    L->logit_shift = (int8_t)logit_shift;
    L->lls_m_lr_shift = (int8_t)lls_m_lr_shift;

    /* Tensor sections: inside [*next_off, host_off), aligned, in order; absent ones are 0. */
    uint32_t off[8];
    for (int i = 0; i < 8; i++)
        off[i] = tl_get_u32(e + 4 * (LF_WEIGHTS_OFF + i));
    if (L->kind == TL_LAYER_AVGPOOL) {
        for (int i = 0; i < 8; i++) {
            if (off[i] != 0)
                return TL_ERR_MODEL;
        }
    } else {
        uint32_t oc = (uint32_t)L->out_c;
        if (!section_ok(off[0], (uint32_t)n_weights, 1, next_off, host_off))
            return TL_ERR_MODEL;
        for (int i = 1; i < 8; i++) {
            if (!section_ok(off[i], oc, 4, next_off, host_off))
                return TL_ERR_MODEL;
        }
        if (!quant_arrays_ok(blob, off[2], off[3], L->out_c) || !quant_arrays_ok(blob, off[4], off[5], L->out_c) ||
            !quant_arrays_ok(blob, off[6], off[7], L->out_c))
            return TL_ERR_QUANT;
        /* |bias| + max_acc must fit in int32 (training must keep biases inside this bound too). */
        for (int32_t c = 0; c < L->out_c; c++) {
            int64_t b = tl_get_i32(blob + off[1] + 4u * (uint32_t)c);
            if (b < -(0x7FFFFFFF - max_acc) || b > 0x7FFFFFFF - max_acc)
                return TL_ERR_QUANT;
        }
        /* Alignment was checked (and the blob is 4-byte aligned), so these casts are sound. */
        L->weights = (int8_t *)(void *)(blob + off[0]);
        L->bias = (int32_t *)(void *)(blob + off[1]);
        L->out_mult = (const int32_t *)(const void *)(blob + off[2]);
        L->out_shift = (const int32_t *)(const void *)(blob + off[3]);
        L->upd_mult = (const int32_t *)(const void *)(blob + off[4]);
        L->upd_shift = (const int32_t *)(const void *)(blob + off[5]);
        L->bupd_mult = (const int32_t *)(const void *)(blob + off[6]);
        L->bupd_shift = (const int32_t *)(const void *)(blob + off[7]);
    }

    int32_t lls_len = tl_get_i32(e + 4 * LF_LLS_M_LEN);
    uint32_t lls_off = tl_get_u32(e + 4 * LF_LLS_M_OFF);
    if (lls_len == 0) {
        if (lls_off != 0)
            return TL_ERR_MODEL;
    } else {
        if (lls_len != classes && lls_len != classes * classes)
            return TL_ERR_MODEL;
        if (!section_ok(lls_off, (uint32_t)lls_len, 4, next_off, host_off))
            return TL_ERR_MODEL;
        L->lls_m = (int32_t *)(void *)(blob + lls_off);
    }
    /* Version 2: the adaptation reference statistics, mean[out_c] then std_q8[out_c] (>= 0), after
     * the layer's other sections; the layer's multipliers become writable (adapt_mult/adapt_shift). */
    if (flags & FLAG_ADAPT) {
        if (L->kind == TL_LAYER_AVGPOOL || !section_ok(adapt_off, 2u * (uint32_t)L->out_c, 4, next_off, host_off))
            return TL_ERR_MODEL;
        for (int32_t c = 0; c < L->out_c; c++) {
            if (tl_get_i32(blob + adapt_off + 4u * (uint32_t)(L->out_c + c)) < 0)
                return TL_ERR_QUANT;
        }
        L->adapt_ref = (const int32_t *)(const void *)(blob + adapt_off);
        L->adapt_mult = (int32_t *)(void *)(blob + off[2]);
        L->adapt_shift = (int32_t *)(void *)(blob + off[3]);
    }
    /* LF_SCALES_OFF points into the host-only area; the core has no use for it. */
    return TL_OK;
}

/* ---------------------------------------------------------------- the body */

/* Everything after the CRC check: model header, layer table, chaining. file_len bytes of blob
 * are readable and file_len >= FILE_HEADER_BYTES. m->cfg is set from the LLS modulation found. */
static tl_status parse_body(uint8_t *blob, uint32_t file_len, tl_layer *layers, int32_t max_layers, tl_model *m)
{
    const uint32_t version = tl_get_u32(blob + 4);
    if (file_len < LAYER_TABLE_OFF)
        return TL_ERR_MODEL;
    int32_t classes = tl_get_i32(blob + MH_CLASSES);
    int32_t in_h = tl_get_i32(blob + MH_IN_H), in_w = tl_get_i32(blob + MH_IN_W), in_c = tl_get_i32(blob + MH_IN_C);
    int32_t input_zp = tl_get_i32(blob + MH_INPUT_ZP);
    int32_t n = tl_get_i32(blob + MH_N_LAYERS);
    uint32_t table_off = tl_get_u32(blob + MH_TABLE_OFF), entry_bytes = tl_get_u32(blob + MH_ENTRY_BYTES);
    uint32_t data_off = tl_get_u32(blob + MH_DATA_OFF), host_off = tl_get_u32(blob + MH_HOST_OFF);
    uint32_t host_len = tl_get_u32(blob + MH_HOST_LEN), json_len = tl_get_u32(blob + MH_JSON_LEN);

    if (n < 1 || n > TL_MAX_LAYERS)
        return TL_ERR_MODEL;
    if (n > max_layers)
        return TL_ERR_ARG;              /* the caller's layer storage is too small */
    if (classes < 1 || classes > TL_MAX_CLASSES)
        return TL_ERR_MODEL;
    if (table_off != LAYER_TABLE_OFF || entry_bytes != LAYER_ENTRY_BYTES)
        return TL_ERR_MODEL;
    /* n <= 64, so the table end cannot wrap. */
    if (data_off != LAYER_TABLE_OFF + (uint32_t)n * LAYER_ENTRY_BYTES || data_off > file_len)
        return TL_ERR_MODEL;
    if (host_off < data_off || host_off > file_len || host_len != file_len - host_off || json_len > host_len)
        return TL_ERR_MODEL;
    if (!zp_ok(input_zp))
        return TL_ERR_QUANT;

    int32_t n_lls = 0, lls_len = 0;
    uint32_t next_off = data_off;       /* where the next tensor section may start */
    for (int32_t i = 0; i < n; i++) {
        tl_layer *L = &layers[i];
        tl_status s = parse_layer(blob, version, blob + LAYER_TABLE_OFF + (uint32_t)i * LAYER_ENTRY_BYTES, &next_off, host_off,
                                  classes, L);
        if (s != TL_OK)
            return s;
        int32_t ph = i ? layers[i - 1].out_h : in_h, pw = i ? layers[i - 1].out_w : in_w;
        int32_t pc = i ? layers[i - 1].out_c : in_c;
        if (L->in_h != ph || L->in_w != pw || L->in_c != pc)
            return TL_ERR_SHAPE;
        /* The zero point of a tensor is one number, whichever layer reads or writes it. */
        if (L->in_zp != (i ? layers[i - 1].out_zp : input_zp))
            return TL_ERR_QUANT;
        if (L->lls_m != 0) {
            int32_t len = tl_get_i32(blob + LAYER_TABLE_OFF + (uint32_t)i * LAYER_ENTRY_BYTES + 4 * LF_LLS_M_LEN);
            if (n_lls && len != lls_len)
                return TL_ERR_MODEL;    /* one LLS variant per model */
            lls_len = len;
            n_lls++;
        }
    }
    if (layers[n - 1].out_c != classes || layers[n - 1].kind == TL_LAYER_AVGPOOL)
        return TL_ERR_SHAPE;
    if (layers[n - 1].adapt_ref != 0)
        return TL_ERR_MODEL;                /* the classifier is never adapted */

    tl_model z = {0};
    *m = z;
    m->n_layers = n;
    m->layers = layers;
    m->classes = classes;
    /* Defaults = host.core.CModel's and host.simulate's (tau = host.simulate.TAU = 0.5, seed 0,
     * basis_seed 0); a board changes them with the protocol's SET_CONFIG (tl_proto_api.h). */
    m->cfg.basis = TL_BASIS_SQUARE;
    m->cfg.rounding = TL_ROUND_STOCHASTIC;
    m->cfg.inv_tau_q8 = 512;
    m->cfg.seed = 0;
    m->cfg.basis_seed = 0;
    m->cfg.variant = n_lls == 0 ? TL_LLS_PLAIN : (lls_len == classes ? TL_LLS_M : TL_LLS_MXM);
    /* classes == 1 makes both lengths 1; LLS-M is the meaningful reading then. */
    return TL_OK;
}

/* ---------------------------------------------------------------- public entries */

/* Argument, magic, version, length and CRC checks shared by both loaders; *file_len receives the
 * bytes the file says it has (a longer buffer, e.g. a padded flash region, is fine). */
static tl_status check_file(const uint8_t *blob, int32_t size, uint32_t *file_len)
{
    if (((uintptr_t)blob & 3u) != 0)
        return TL_ERR_ARG;              /* int32 tensors are used in place */
    {
        /* Tensors are used in place as little-endian int32: refuse a big-endian core. */
        const uint32_t probe = 1;
        if (*(const uint8_t *)&probe != 1)
            return TL_ERR_UNSUPPORTED;
    }
    uint32_t len = (uint32_t)size;
    if (len < 4)
        return TL_ERR_TRUNCATED;
    if (blob[0] != 'T' || blob[1] != 'L' || blob[2] != 'L' || blob[3] != 'S')
        return TL_ERR_MAGIC;
    if (len < FILE_HEADER_BYTES)
        return TL_ERR_TRUNCATED;
    if (tl_get_u32(blob + 4) < FORMAT_VERSION_MIN || tl_get_u32(blob + 4) > FORMAT_VERSION)
        return TL_ERR_VERSION;
    uint32_t body_len = tl_get_u32(blob + 8);
    if (body_len > len - FILE_HEADER_BYTES)
        return TL_ERR_TRUNCATED;
    if (tl_crc32(0, blob + FILE_HEADER_BYTES, (int32_t)body_len) != tl_get_u32(blob + 12))
        return TL_ERR_CRC;
    *file_len = FILE_HEADER_BYTES + body_len;
    return TL_OK;
}

tl_status tl_modelfile_load(uint8_t *blob, int32_t size, tl_layer *layers, int32_t max_layers, tl_model *out)
{
    if (blob == 0 || layers == 0 || out == 0 || size < 0 || max_layers < 1)
        return TL_ERR_ARG;
    uint32_t file_len = 0;
    tl_status s = check_file(blob, size, &file_len);
    if (s != TL_OK)
        return s;
    tl_model m;
    s = parse_body(blob, file_len, layers, max_layers, &m);
    if (s != TL_OK)
        return s;
    s = tl_model_prepare(&m);
    if (s != TL_OK)
        return s;
    *out = m;
    return TL_OK;
}

/* What training writes, per trainable layer: weights (int8, rounded up to 4 bytes), bias and
 * lls_m (int32); what adaptation writes, per adapted layer (version 2, FLAG_ADAPT): bias and the
 * requantization multipliers and shifts (int32 each). Other tensors are never written and stay
 * where the file is. */
static uint32_t train_section_bytes(const tl_model *m, const tl_layer *L, uint32_t *w, uint32_t *b, uint32_t *lm,
                                    uint32_t *q)
{
    *w = *b = *lm = *q = 0;
    if (L->kind == TL_LAYER_AVGPOOL)
        return 0;
    if (L->trainable) {
        *w = ((uint32_t)tl_layer_n_weights(L) + 3u) & ~3u;
        *b = 4u * (uint32_t)L->out_c;
        if (L->lls_m)
            *lm = 4u * (uint32_t)(m->cfg.variant == TL_LLS_MXM ? m->classes * m->classes : m->classes);
    }
    if (L->adapt_ref) {
        *b = 4u * (uint32_t)L->out_c;
        *q = 8u * (uint32_t)L->out_c;
    }
    return *w + *b + *lm + *q;
}

tl_status tl_modelfile_load_rom(const uint8_t *blob, int32_t size, uint8_t *ram, int32_t ram_cap,
                                int32_t *ram_bytes, tl_layer *layers, int32_t max_layers, tl_model *out)
{
    if (blob == 0 || layers == 0 || out == 0 || size < 0 || max_layers < 1 || ram_cap < 0 ||
        (ram == 0 && ram_cap > 0) || ((uintptr_t)ram & 3u) != 0)
        return TL_ERR_ARG;
    uint32_t file_len = 0;
    tl_status s = check_file(blob, size, &file_len);
    if (s != TL_OK)
        return s;
    tl_model m;
    /* parse_body only reads the blob; the pointers it sets are redirected to ram below for every
     * tensor training writes, so nothing is ever written through the others. */
    s = parse_body((uint8_t *)(uintptr_t)blob, file_len, layers, max_layers, &m);
    if (s != TL_OK)
        return s;
    s = tl_model_prepare(&m);
    if (s != TL_OK)
        return s;
    uint64_t need = 0;
    uint32_t w, b, lm, qb;
    for (int32_t i = 0; i < m.n_layers; i++)
        need += train_section_bytes(&m, &layers[i], &w, &b, &lm, &qb);
    /* The sections lie in the file without overlapping (section_ok), so this cannot exceed the
     * file's size; the check stays as the bound the int32 size below relies on. */
    if (need > 0x7FFFFFFFu)
        return TL_ERR_MODEL;
    if (ram_bytes)
        *ram_bytes = (int32_t)need;
    if (need > (uint64_t)(uint32_t)ram_cap)
        return TL_ERR_RAM;
    uint32_t at = 0;
    for (int32_t i = 0; i < m.n_layers; i++) {
        tl_layer *L = &layers[i];
        if (train_section_bytes(&m, L, &w, &b, &lm, &qb) == 0)
            continue;
        const uint8_t *src[5] = {(const uint8_t *)L->weights, (const uint8_t *)L->bias, (const uint8_t *)L->lls_m,
                                 (const uint8_t *)L->out_mult, (const uint8_t *)L->out_shift};
        const uint32_t n[5] = {w ? (uint32_t)tl_layer_n_weights(L) : 0, b, lm, qb / 2, qb / 2};
        const uint32_t room[5] = {w, b, lm, qb / 2, qb / 2};
        uint8_t *dst[5];
        for (int k = 0; k < 5; k++) {
            dst[k] = ram + at;
            for (uint32_t j = 0; j < n[k]; j++)
                dst[k][j] = src[k][j];
            for (uint32_t j = n[k]; j < room[k]; j++)
                dst[k][j] = 0;
            at += room[k];
        }
        if (w)
            L->weights = (int8_t *)(void *)dst[0];
        L->bias = (int32_t *)(void *)dst[1];
        if (lm)
            L->lls_m = (int32_t *)(void *)dst[2];
        if (qb) {                           /* adapted: the multipliers live in RAM, writable */
            L->adapt_mult = (int32_t *)(void *)dst[3];
            L->adapt_shift = (int32_t *)(void *)dst[4];
            L->out_mult = L->adapt_mult;
            L->out_shift = L->adapt_shift;
        }
    }
    *out = m;
    return TL_OK;
}
