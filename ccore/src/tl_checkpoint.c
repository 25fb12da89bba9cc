/* Checkpoints of the trained state in NOR flash: two slots (A/B), a generation counter, CRC32.
 * Layout, record fields and write order: tinylls_api.h ("checkpoints"). No allocation, no float:
 * the payload is streamed between the tensors in RAM and the flash through one page buffer.
 *
 * Why the previous checkpoint survives any power cut: a save only ever erases and programs the
 * slot that does not hold the newest valid checkpoint, and that slot becomes valid only when its
 * commit record - programmed last, after the payload was read back and compared with RAM - is
 * complete and its CRC checks. A cut during the erase, the payload or the record leaves the target
 * slot blank or corrupt (the record CRC or the payload CRC fails) and the other slot untouched.
 * Boot (tl_ckpt_restore) takes the valid slot with the newest generation (serial-number order). */
#include "tinylls.h"
#include "tl_bytes.h"
#include "tl_layer.h"
#include "tl_support.h"

enum {
    R_MAGIC, R_VERSION, R_GEN, R_PAYLOAD_BYTES, R_PAYLOAD_CRC, R_STEP, R_EPOCH, R_INDEX, R_MODEL_SIZE,
    R_MODEL_CRC, R_BASIS, R_VARIANT, R_ROUNDING, R_SEED, R_BASIS_SEED, R_INV_TAU, R_LLS_VARIANT,
    R_EVERY, R_N_LAYERS, R_TAG, R_CRC = R_TAG + TL_CKPT_TAG_WORDS
};
typedef char record_words_match[R_CRC + 1 == TL_CKPT_RECORD_WORDS && 4 * TL_CKPT_RECORD_WORDS == TL_CKPT_RECORD_BYTES ? 1 : -1];

enum { RATE_BYTES = 16 };   /* per layer: lr_mult, lr_shift, lls_m_lr_mult, lls_m_lr_shift */

/* ---------------------------------------------------------------- geometry */
static int32_t pow2(uint32_t v)
{
    return v != 0 && (v & (v - 1)) == 0;
}

static tl_status flash_ok(const tl_flash *f)
{
    if (!f || !f->erase || !f->program || !f->read)
        return TL_ERR_ARG;
    if (!pow2(f->sector_bytes) || !pow2(f->page_bytes) || f->page_bytes < TL_CKPT_RECORD_BYTES
        || f->page_bytes > TL_CKPT_MAX_PAGE || f->page_bytes > f->sector_bytes
        || f->size % f->sector_bytes != 0 || f->size / f->sector_bytes < 2)
        return TL_ERR_ARG;
    return TL_OK;
}

/* Bytes of one slot: half the region, rounded down to whole sectors. */
static uint32_t slot_bytes(const tl_flash *f)
{
    return (f->size / 2) / f->sector_bytes * f->sector_bytes;
}

static uint32_t slot_base(const tl_flash *f, int32_t k)
{
    return k == 0 ? 0u : slot_bytes(f);
}

/* ---------------------------------------------------------------- the payload stream */
static int32_t lls_count(const tl_model *m, int32_t lls_variant)
{
    return lls_variant == TL_LLS_MXM ? m->classes * m->classes : m->classes;
}

/* A window [lo, hi) of the payload: copied out of the model (dir 0) or into it (dir 1). */
typedef struct {
    int64_t pos, lo, hi;
    uint8_t *buf;           /* buf[0] is stream byte lo */
    int32_t dir;
} win;

static void seg_bytes(win *w, int8_t *p, int64_t count)
{
    int64_t a = w->lo > w->pos ? w->lo : w->pos;
    int64_t b = w->hi < w->pos + count ? w->hi : w->pos + count;
    for (int64_t i = a; i < b; i++) {
        if (w->dir)
            p[i - w->pos] = (int8_t)w->buf[i - w->lo];
        else
            w->buf[i - w->lo] = (uint8_t)p[i - w->pos];
    }
    w->pos += count;
}

/* int32 values little-endian, byte by byte (any endianness; a restore writes whole words) */
static void seg_words(win *w, int32_t *p, int64_t count)
{
    int64_t bytes = 4 * count;
    int64_t a = w->lo > w->pos ? w->lo : w->pos;
    int64_t b = w->hi < w->pos + bytes ? w->hi : w->pos + bytes;
    for (int64_t i = a; i < b; i++) {
        int64_t j = i - w->pos;
        uint32_t v = (uint32_t)p[j >> 2];
        int32_t sh = 8 * (int32_t)(j & 3);
        if (w->dir) {
            v = (v & ~(0xFFu << sh)) | ((uint32_t)w->buf[i - w->lo] << sh);
            p[j >> 2] = (int32_t)v;     /* two's complement: every target tl_support supports */
        } else {
            w->buf[i - w->lo] = (uint8_t)(v >> sh);
        }
    }
    w->pos += bytes;
}

/* The rates as int32 words (lr_shift etc. are int8 in the layer). */
static void seg_rates(win *w, tl_layer *L)
{
    int32_t r[4];
    r[0] = L->lr_mult;
    r[1] = L->lr_shift;
    r[2] = L->lls_m_lr_mult;
    r[3] = L->lls_m_lr_shift;
    seg_words(w, r, 4);
    if (w->dir) {       /* checked by tl_ckpt_restore before the copy (tl_qmult_ok) */
        L->lr_mult = r[0];
        L->lr_shift = (int8_t)r[1];
        L->lls_m_lr_mult = r[2];
        L->lls_m_lr_shift = (int8_t)r[3];
    }
}

static void walk(tl_model *m, int32_t lls_variant, win *w)
{
    for (int32_t l = 0; l < m->n_layers; l++)
        seg_rates(w, &m->layers[l]);
    for (int32_t l = 0; l < m->n_layers; l++) {
        tl_layer *L = &m->layers[l];
        if (!L->trainable)
            continue;
        if (L->weights)
            seg_bytes(w, L->weights, tl_layer_n_weights(L));
        if (L->bias)
            seg_words(w, L->bias, L->out_c);
        if (L->lls_m)
            seg_words(w, L->lls_m, lls_count(m, lls_variant));
    }
}

int32_t tl_ckpt_payload_bytes(const tl_model *m, int32_t lls_variant)
{
    if (!m || !m->layers || m->n_layers < 1 || m->n_layers > TL_MAX_LAYERS)
        return TL_ERR_ARG;
    win w = {0, 0, 0, 0, 0};
    walk((tl_model *)m, lls_variant, &w);  /* an empty window: nothing is read or written */
    if (w.pos > 0x7FFFFFFF)
        return TL_ERR_FLASH_SIZE;
    return (int32_t)w.pos;
}

static void payload_read(const tl_model *m, int32_t lls_variant, uint32_t off, uint8_t *out, int32_t n)
{
    win w = {0, off, (int64_t)off + n, out, 0};
    walk((tl_model *)m, lls_variant, &w);  /* dir 0 only reads the model */
}

static void payload_write(tl_model *m, int32_t lls_variant, uint32_t off, uint8_t *in, int32_t n)
{
    win w = {0, off, (int64_t)off + n, in, 1};
    walk(m, lls_variant, &w);
}

/* ---------------------------------------------------------------- records */
static void record_pack(const tl_ckpt_state *st, uint32_t gen, uint32_t payload_bytes, uint32_t payload_crc,
                        int32_t n_layers, uint8_t *out)
{
    uint32_t r[TL_CKPT_RECORD_WORDS];
    r[R_MAGIC] = TL_CKPT_MAGIC;
    r[R_VERSION] = TL_CKPT_VERSION;
    r[R_GEN] = gen;
    r[R_PAYLOAD_BYTES] = payload_bytes;
    r[R_PAYLOAD_CRC] = payload_crc;
    r[R_STEP] = st->step;
    r[R_EPOCH] = st->epoch;
    r[R_INDEX] = st->index;
    r[R_MODEL_SIZE] = st->model_size;
    r[R_MODEL_CRC] = st->model_crc;
    r[R_BASIS] = (uint32_t)st->cfg.basis;
    r[R_VARIANT] = (uint32_t)st->cfg.variant;
    r[R_ROUNDING] = (uint32_t)st->cfg.rounding;
    r[R_SEED] = st->cfg.seed;
    r[R_BASIS_SEED] = st->cfg.basis_seed;
    r[R_INV_TAU] = (uint32_t)st->cfg.inv_tau_q8;
    r[R_LLS_VARIANT] = (uint32_t)st->lls_variant;
    r[R_EVERY] = st->every;
    r[R_N_LAYERS] = (uint32_t)n_layers;
    for (int32_t i = 0; i < TL_CKPT_TAG_WORDS; i++)
        r[R_TAG + i] = st->tag[i];
    for (int32_t i = 0; i < R_CRC; i++)
        tl_put_u32(out + 4 * i, r[i]);
    tl_put_u32(out + 4 * R_CRC, tl_crc32(0, out, 4 * R_CRC));
}

static int32_t all_ff(const uint8_t *p, int32_t n)
{
    for (int32_t i = 0; i < n; i++)
        if (p[i] != 0xFFu)
            return 0;
    return 1;
}

static uint32_t rec_word(const uint8_t *rec, int32_t i)
{
    return tl_get_u32(rec + 4 * i);
}

/* Reads slot k's record into rec and classifies it; a record that checks also has its payload's
 * CRC checked (read back in page-sized pieces through buf). */
static tl_status read_slot(const tl_flash *f, int32_t k, uint8_t *rec, uint8_t *buf, tl_ckpt_slot *s)
{
    const uint32_t base = slot_base(f, k);
    s->state = TL_CKPT_SLOT_CORRUPT;
    s->generation = s->step = s->payload_crc = s->payload_bytes = s->model_crc = 0;
    if (f->read(f->user, base, rec, TL_CKPT_RECORD_BYTES) != 0)
        return TL_ERR_FLASH;
    if (all_ff(rec, TL_CKPT_RECORD_BYTES)) {
        s->state = TL_CKPT_SLOT_BLANK;
        return TL_OK;
    }
    if (rec_word(rec, R_MAGIC) != TL_CKPT_MAGIC || rec_word(rec, R_VERSION) != TL_CKPT_VERSION
        || tl_crc32(0, rec, 4 * R_CRC) != rec_word(rec, R_CRC))
        return TL_OK;
    const uint32_t n = rec_word(rec, R_PAYLOAD_BYTES);
    if (n > slot_bytes(f) - f->page_bytes)
        return TL_OK;
    uint32_t crc = 0;
    for (uint32_t off = 0; off < n; off += f->page_bytes) {
        int32_t c = (int32_t)(n - off < f->page_bytes ? n - off : f->page_bytes);
        if (f->read(f->user, base + f->page_bytes + off, buf, c) != 0)
            return TL_ERR_FLASH;
        crc = tl_crc32(crc, buf, c);
    }
    s->generation = rec_word(rec, R_GEN);
    s->step = rec_word(rec, R_STEP);
    s->payload_crc = rec_word(rec, R_PAYLOAD_CRC);
    s->payload_bytes = n;
    s->model_crc = rec_word(rec, R_MODEL_CRC);
    if (crc == s->payload_crc)
        s->state = TL_CKPT_SLOT_VALID;
    return TL_OK;
}

tl_status tl_ckpt_scan(const tl_flash *f, tl_ckpt_slot *slots)
{
    tl_status s = flash_ok(f);
    if (s != TL_OK || !slots)
        return s != TL_OK ? s : TL_ERR_ARG;
    uint8_t rec[TL_CKPT_RECORD_BYTES], buf[TL_CKPT_MAX_PAGE];
    for (int32_t k = 0; k < 2; k++) {
        s = read_slot(f, k, rec, buf, &slots[k]);
        if (s != TL_OK)
            return s;
    }
    return TL_OK;
}

/* Generation a is newer than b in serial-number arithmetic (RFC 1982): a - b in 1 .. 2^31 - 1
 * modulo 2^32. The two slots' generations differ by one in any sequence of saves, so this orders
 * them across the wrap from 2^32 - 1 to 0 as well; a plain a > b would let a record at 2^32 - 1
 * (one found on flash, CRC and all: fuzz/fuzz_checkpoint.c) outrank every later save for ever. */
static int gen_newer(uint32_t a, uint32_t b)
{
    return (uint32_t)(a - b) - 1u < 0x7FFFFFFFu;
}

/* The valid slot with the newest generation, or -1. */
static int32_t newest(const tl_ckpt_slot *slots)
{
    int32_t best = -1;
    for (int32_t k = 0; k < 2; k++)
        if (slots[k].state == TL_CKPT_SLOT_VALID && (best < 0 || gen_newer(slots[k].generation, slots[best].generation)))
            best = k;
    return best;
}

/* ---------------------------------------------------------------- save */
tl_status tl_ckpt_save(const tl_flash *f, const tl_model *m, tl_ckpt_state *st, tl_ckpt_slot *slots)
{
    tl_status s = flash_ok(f);
    if (s != TL_OK)
        return s;
    if (!m || !st || !slots)
        return TL_ERR_ARG;
    const int32_t payload = tl_ckpt_payload_bytes(m, st->lls_variant);
    if (payload < 0)
        return payload;
    const uint32_t sb = slot_bytes(f), page = f->page_bytes;
    if ((uint32_t)payload > sb - page)
        return TL_ERR_FLASH_SIZE;
    const int32_t prev = newest(slots);
    const int32_t k = prev == 0 ? 1 : 0;
    const uint32_t gen = prev < 0 ? 1u : slots[prev].generation + 1u;
    const uint32_t base = slot_base(f, k);
    uint8_t buf[TL_CKPT_MAX_PAGE], back[TL_CKPT_MAX_PAGE];

    /* 1. erase: the sector with the record first, so the slot is blank (not stale) from the start;
     * then only the sectors the payload needs */
    slots[k].state = TL_CKPT_SLOT_CORRUPT;     /* until the record is back: unknown */
    const uint32_t used = page + (uint32_t)payload;
    for (uint32_t a = 0; a < used; a += f->sector_bytes)
        if (f->erase(f->user, base + a) != 0)
            return TL_ERR_FLASH;
    /* 2. payload, page by page, streamed from RAM; its CRC on the way */
    uint32_t crc = 0;
    for (uint32_t off = 0; off < (uint32_t)payload; off += page) {
        int32_t c = (int32_t)((uint32_t)payload - off < page ? (uint32_t)payload - off : page);
        payload_read(m, st->lls_variant, off, buf, c);
        crc = tl_crc32(crc, buf, c);
        if (f->program(f->user, base + page + off, buf, c) != 0)
            return TL_ERR_FLASH;
    }
    /* 3. verify: read back, compare with RAM (which nothing changes during a save) */
    for (uint32_t off = 0; off < (uint32_t)payload; off += page) {
        int32_t c = (int32_t)((uint32_t)payload - off < page ? (uint32_t)payload - off : page);
        payload_read(m, st->lls_variant, off, buf, c);
        if (f->read(f->user, base + page + off, back, c) != 0)
            return TL_ERR_FLASH;
        for (int32_t i = 0; i < c; i++)
            if (back[i] != buf[i])
                return TL_ERR_FLASH;
    }
    /* 4. commit: the record, one program, read back */
    record_pack(st, gen, (uint32_t)payload, crc, m->n_layers, buf);
    if (f->program(f->user, base, buf, TL_CKPT_RECORD_BYTES) != 0)
        return TL_ERR_FLASH;
    if (f->read(f->user, base, back, TL_CKPT_RECORD_BYTES) != 0)
        return TL_ERR_FLASH;
    for (int32_t i = 0; i < TL_CKPT_RECORD_BYTES; i++)
        if (back[i] != buf[i])
            return TL_ERR_FLASH;
    slots[k].state = TL_CKPT_SLOT_VALID;
    slots[k].generation = gen;
    slots[k].step = st->step;
    slots[k].payload_crc = crc;
    slots[k].payload_bytes = (uint32_t)payload;
    slots[k].model_crc = st->model_crc;
    st->generation = gen;
    return TL_OK;
}

/* ---------------------------------------------------------------- restore */
tl_status tl_ckpt_restore(const tl_flash *f, tl_model *m, tl_ckpt_state *st, int32_t lls_variant,
                          tl_ckpt_slot *slots, int32_t *found)
{
    if (!found)
        return TL_ERR_ARG;
    *found = TL_CKPT_NONE;
    tl_status s = tl_ckpt_scan(f, slots);
    if (s != TL_OK)
        return s;
    if (!m || !st)
        return TL_ERR_ARG;
    const int32_t k = newest(slots);
    if (k < 0) {
        *found = slots[0].state == TL_CKPT_SLOT_CORRUPT || slots[1].state == TL_CKPT_SLOT_CORRUPT
                     ? TL_CKPT_ALL_CORRUPT : TL_CKPT_NONE;
        return TL_OK;
    }
    uint8_t rec[TL_CKPT_RECORD_BYTES], buf[TL_CKPT_MAX_PAGE];
    const uint32_t base = slot_base(f, k), page = f->page_bytes;
    if (f->read(f->user, base, rec, TL_CKPT_RECORD_BYTES) != 0)
        return TL_ERR_FLASH;
    const int32_t payload = tl_ckpt_payload_bytes(m, lls_variant);
    if (rec_word(rec, R_MODEL_SIZE) != st->model_size || rec_word(rec, R_MODEL_CRC) != st->model_crc
        || rec_word(rec, R_N_LAYERS) != (uint32_t)m->n_layers
        || rec_word(rec, R_LLS_VARIANT) != (uint32_t)lls_variant
        || payload < 0 || rec_word(rec, R_PAYLOAD_BYTES) != (uint32_t)payload) {
        for (int32_t i = 0; i < TL_CKPT_TAG_WORDS; i++)     /* whose it is: the host can say */
            st->tag[i] = rec_word(rec, R_TAG + i);
        *found = TL_CKPT_OTHER_MODEL;
        return TL_OK;
    }
    tl_train_cfg cfg;
    cfg.basis = (int32_t)rec_word(rec, R_BASIS);
    cfg.variant = (int32_t)rec_word(rec, R_VARIANT);
    cfg.rounding = (int32_t)rec_word(rec, R_ROUNDING);
    cfg.seed = rec_word(rec, R_SEED);
    cfg.basis_seed = rec_word(rec, R_BASIS_SEED);
    cfg.inv_tau_q8 = (int32_t)rec_word(rec, R_INV_TAU);
    /* the payload is read twice: checked whole (CRC, and the rates' ranges) before anything in the
     * model changes, then copied */
    uint32_t crc = 0;
    for (uint32_t off = 0; off < (uint32_t)payload; off += page) {
        int32_t c = (int32_t)((uint32_t)payload - off < page ? (uint32_t)payload - off : page);
        if (f->read(f->user, base + page + off, buf, c) != 0)
            return TL_ERR_FLASH;
        crc = tl_crc32(crc, buf, c);
    }
    if (crc != rec_word(rec, R_PAYLOAD_CRC)) {     /* changed since the scan */
        slots[k].state = TL_CKPT_SLOT_CORRUPT;
        *found = TL_CKPT_ALL_CORRUPT;
        return TL_OK;
    }
    tl_model trial = *m;
    trial.cfg = cfg;
    s = tl_model_prepare(&trial);                  /* cfg ranges (derived fields depend on shapes only) */
    if (s != TL_OK)
        return s;
    for (int32_t l = 0; l < m->n_layers; l++) {    /* rates: 16 bytes per layer at the start */
        uint8_t r[RATE_BYTES];
        if (f->read(f->user, base + page + (uint32_t)(RATE_BYTES * l), r, RATE_BYTES) != 0)
            return TL_ERR_FLASH;
        if (!tl_qmult_ok(tl_get_i32(r), tl_get_i32(r + 4)) || !tl_qmult_ok(tl_get_i32(r + 8), tl_get_i32(r + 12)))
            return TL_ERR_QUANT;
    }
    for (uint32_t off = 0; off < (uint32_t)payload; off += page) {
        int32_t c = (int32_t)((uint32_t)payload - off < page ? (uint32_t)payload - off : page);
        if (f->read(f->user, base + page + off, buf, c) != 0)
            return TL_ERR_FLASH;
        payload_write(m, lls_variant, off, buf, c);
    }
    m->cfg = cfg;
    m->step = rec_word(rec, R_STEP);
    s = tl_model_prepare(m);
    if (s != TL_OK)
        return s;
    st->generation = rec_word(rec, R_GEN);
    st->step = m->step;
    st->epoch = rec_word(rec, R_EPOCH);
    st->index = rec_word(rec, R_INDEX);
    st->cfg = cfg;
    st->lls_variant = lls_variant;
    st->every = rec_word(rec, R_EVERY);
    for (int32_t i = 0; i < TL_CKPT_TAG_WORDS; i++)
        st->tag[i] = rec_word(rec, R_TAG + i);
    *found = TL_CKPT_RESTORED;
    return TL_OK;
}

tl_status tl_ckpt_erase(const tl_flash *f, tl_ckpt_slot *slots)
{
    tl_status s = flash_ok(f);
    if (s != TL_OK || !slots)
        return s != TL_OK ? s : TL_ERR_ARG;
    for (int32_t k = 0; k < 2; k++) {
        if (f->erase(f->user, slot_base(f, k)) != 0)
            return TL_ERR_FLASH;
        slots[k].state = TL_CKPT_SLOT_BLANK;
        slots[k].generation = slots[k].step = slots[k].payload_crc = slots[k].payload_bytes = 0;
        slots[k].model_crc = 0;
    }
    return TL_OK;
}
