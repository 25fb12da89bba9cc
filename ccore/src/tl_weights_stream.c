/* The trained state of a model as one byte stream (READ_WEIGHTS, the final CRC readback, and
 * host.model.weights_sha256): its size, a window of it, and its CRC32. Used by the protocol's
 * dispatcher (tl_proto_dev.c) and by hosts; declared in tl_proto_api.h. */
#include "tinylls.h"
#include "tl_proto_api.h"
#include "tl_layer.h"

/* The READ_WEIGHTS byte stream is the concatenation, layer by layer, of weights (int8), bias
 * (int32 little-endian) and lls_m (int32 little-endian) where present: host.model.weights_sha256
 * hashes the same bytes. walk() copies [offset, offset + n) into out (if not NULL) and/or folds
 * it into *crc (if not NULL), and returns the stream's total size in *total. */
static int32_t lls_m_count(const tl_model *m)
{
    return m->cfg.variant == TL_LLS_MXM ? m->classes * m->classes : m->classes;
}

typedef struct {
    int32_t pos;            /* stream position of the next segment */
    int32_t lo, hi;         /* requested window [lo, hi) */
    uint8_t *out;
    uint32_t *crc;
} walk_state;

static void walk_bytes(walk_state *w, const int8_t *p, int32_t count)
{
    int32_t a = w->lo > w->pos ? w->lo : w->pos;
    int32_t b = w->hi < w->pos + count ? w->hi : w->pos + count;
    if (a < b) {
        if (w->out)
            for (int32_t i = a; i < b; i++)
                w->out[i - w->lo] = (uint8_t)p[i - w->pos];
        if (w->crc)
            *w->crc = tl_crc32(*w->crc, (const uint8_t *)p + (a - w->pos), b - a);
    }
    w->pos += count;
}

static void walk_words(walk_state *w, const int32_t *p, int32_t count)
{
    int32_t bytes = 4 * count;
    int32_t a = w->lo > w->pos ? w->lo : w->pos;
    int32_t b = w->hi < w->pos + bytes ? w->hi : w->pos + bytes;
    for (int32_t i = a; i < b; i++) {
        int32_t j = i - w->pos;
        uint8_t v = (uint8_t)((uint32_t)p[j >> 2] >> (8 * (j & 3)));
        if (w->out)
            w->out[i - w->lo] = v;
        if (w->crc)
            *w->crc = tl_crc32(*w->crc, &v, 1);
    }
    w->pos += bytes;
}

static void walk(const tl_model *m, walk_state *w)
{
    for (int32_t l = 0; l < m->n_layers; l++) {
        const tl_layer *L = &m->layers[l];
        if (L->weights)
            walk_bytes(w, L->weights, (int32_t)tl_layer_n_weights(L));
        if (L->bias)
            walk_words(w, L->bias, L->out_c);
        if (L->lls_m)
            walk_words(w, L->lls_m, lls_m_count(m));
    }
}

tl_status tl_proto_weights_size(const tl_model *m, int32_t *size)
{
    if (!m || !size || !m->layers)
        return TL_ERR_ARG;
    walk_state w = {0, 0, 0, 0, 0};
    walk(m, &w);
    *size = w.pos;
    return TL_OK;
}

tl_status tl_proto_weights_read(const tl_model *m, int32_t offset, uint8_t *out, int32_t n)
{
    int32_t total = 0;
    if (!out || offset < 0 || n < 0)
        return TL_ERR_ARG;
    tl_status s = tl_proto_weights_size(m, &total);
    if (s != TL_OK)
        return s;
    if (offset > total || n > total - offset)
        return TL_PROTO_ERR_RANGE;
    walk_state w = {0, offset, offset + n, out, 0};
    walk(m, &w);
    return TL_OK;
}

tl_status tl_proto_weights_crc(const tl_model *m, uint32_t *crc)
{
    int32_t total = 0;
    if (!crc)
        return TL_ERR_ARG;
    tl_status s = tl_proto_weights_size(m, &total);
    if (s != TL_OK)
        return s;
    uint32_t c = 0;
    walk_state w = {0, 0, total, 0, &c};
    walk(m, &w);
    *crc = c;
    return TL_OK;
}
