/* The weight and bias update of LLS training, portable C: the specification the Cortex-M
 * (tl_lls_dsp.c) and x86 (tl_lls_x86.c) paths are held to, bit for bit.
 *
 * Given a layer's learning signal d (block floating point, exponent E; tl_lls.c), each output
 * channel c gets
 *   delta(pos)      = d_t * f'(h(pos, c)) as int16 after the channel's own shift rs (so Ec = E - rs),
 *                     t the pooling cell of pos (the classifier: t = c);
 *   dW[c][tap][j]   = sum over the positions where the tap touches the image of
 *                     delta(pos) (x(tap(pos), j) - in_zp), exact in int64;
 *   db[c]           = sum delta;
 * and each gradient is scaled by the layer's learning rate times the channel's factor (a combined
 * quantized multiplier), rounded stochastically with the counter-based stream (seed, step, layer,
 * index) and subtracted with saturation to [-127, 127] (bias: int32). */
#include "tl_lls.h"

/* ---------------------------------------------------------------- update scaling */
/* acc * mult * 2^(shift - 31 - E) as an int64, rounded stochastically with the random word rnd
 * (or to nearest); with q16 != NULL also the unrounded value in Q16. */
int64_t tl_scale_update(int64_t acc, int32_t mult, int32_t shift, int32_t E, int32_t rounding, uint32_t rnd,
                        int64_t *q16)
{
    if (acc == 0 || mult == 0) {
        if (q16)
            *q16 = 0;
        return 0;
    }
    const uint64_t mag = acc < 0 ? (uint64_t)(-acc) : (uint64_t)acc;
    const int k = TL_MAX(0, tl_bit_length64(mag) - 31); /* keep |acc| < 2^31 so acc*mult fits */
    int64_t prod = tl_shr_round(acc, k) * (int64_t)mult;
    int32_t r = 31 + E - shift - k;
    if (q16) {
        if (r >= 16) {
            *q16 = tl_shr_round(prod, TL_MIN(r - 16, 62));
        } else { /* saturated where the product would leave int64 (a crafted file's rates) */
            const int up = TL_MIN(16 - r, 20);
            const int64_t room = INT64_MAX >> up;
            *q16 = prod > room ? INT64_MAX : prod < -room ? -INT64_MAX : prod * ((int64_t)1 << up);
        }
    }
    if (r <= 0) {
        /* |prod| 2^-r clamped to 2^40; compared before multiplying, which could overflow int64 for
         * a crafted file's learning rates (fuzz/fuzz_modelfile.c): the same value wherever the
         * product fits, since 2^40 >> -r is exact for -r <= 20 */
        const int64_t lim = (int64_t)1 << 40;
        if (r < -20 || prod > (lim >> -r) || prod < -(lim >> -r))
            return prod < 0 ? -lim : lim;
        return prod * ((int64_t)1 << -r);
    }
    if (r > 62) {
        prod >>= (r - 62);
        r = 62;
    }
    const int64_t fl = prod >> r;
    const uint64_t frac = (uint64_t)(prod - fl * ((int64_t)1 << r)); /* in [0, 2^r) */
    if (rounding == TL_ROUND_NEAREST)
        return fl + (frac >= ((uint64_t)1 << (r - 1)) ? 1 : 0);
    /* round up with probability frac / 2^r, from the top 32 bits of the fraction */
    const uint32_t top = r >= 32 ? (uint32_t)(frac >> (r - 32)) : (uint32_t)(frac << (32 - r));
    return fl + (rnd < top ? 1 : 0);
}


/* ---------------------------------------------------------------- one channel */
/* One weight: tl_scale_update and the saturating subtraction (or the preview). */
void tl_upd_apply_one(const tl_upd_row *u, int64_t acc, int32_t idx)
{
    int64_t q16;
    const int64_t dw = tl_scale_update(acc, u->wm, u->ws, u->Ec, u->rounding, tl_mix32(u->prefix ^ (uint32_t)idx),
                                    u->dw_preview ? &q16 : NULL);
    if (u->dw_preview)
        u->dw_preview[idx] = -q16;
    else
        u->weights[idx] = (int8_t)TL_CLAMP((int64_t)u->weights[idx] - dw, -127, 127);
}

/* n weights at idx0, idx0 + stride, ... with gradients acc[0..n). For |acc| < 2^31 and a rounding
 * shift r in [1, 62] tl_scale_update reduces to prod = acc * mult; floor(prod / 2^r) plus the rounding
 * bit taken from the r fraction bits of prod, which is what this loop computes without branches;
 * every other case goes through tl_scale_update itself. */
void tl_upd_apply_row(const tl_upd_row *u, const int64_t *acc, int32_t n, int32_t idx0, int32_t stride)
{
    const int32_t r = 31 + u->Ec - u->ws;
    if (u->dw_preview || r < 1 || r > 62) {
        for (int32_t k = 0; k < n; k++)
            tl_upd_apply_one(u, acc[k], idx0 + k * stride);
        return;
    }
    const int64_t mult = u->wm;
    const int nearest = u->rounding == TL_ROUND_NEAREST;
    for (int32_t k = 0; k < n; k++) {
        const int64_t a = acc[k];
        const int32_t idx = idx0 + k * stride;
        if ((uint64_t)(a + INT32_MAX) >= (uint64_t)UINT32_MAX) { /* |a| >= 2^31 */
            tl_upd_apply_one(u, a, idx);
            continue;
        }
        const int64_t prod = a * mult;
        const int64_t fl = prod >> r;
        const uint32_t top = r >= 32 ? (uint32_t)((uint64_t)prod >> (r - 32)) : (uint32_t)((uint64_t)prod << (32 - r));
        const uint32_t rnd = nearest ? 0x7FFFFFFFu : tl_mix32(u->prefix ^ (uint32_t)idx);
        const int64_t dw = fl + (rnd < top ? 1 : 0);
        u->weights[idx] = (int8_t)TL_CLAMP((int64_t)u->weights[idx] - dw, -127, 127);
    }
}

/* One filter tap's gradient correlation over the valid output rectangle [oy0,oy1) x [ox0,ox1):
 * acc[j] += sum delta(oy,ox) x(oy*sh + y_off, ox*sw + x_off, j0 + j) for j < nj (input channels
 * contiguous), returns sum delta over the positions visited. Products go into int32 partial sums
 * flushed to int64 every TL_UPD_FLUSH nonzero positions: exact, and the inner loop vectorises. */
static TL_HOST_CLONES int64_t tap_corr(const int16_t *delta, int32_t ow, const int8_t *in, int32_t iw, int32_t ic,
                                       int32_t sh, int32_t sw, int32_t oy0, int32_t oy1, int32_t ox0, int32_t ox1,
                                       int32_t y_off, int32_t x_off, int32_t j0, int32_t nj, int64_t *acc)
{
    int32_t a32[TL_UPD_JB];
    int64_t dsum = 0;
    int32_t cnt = 0;
    for (int32_t j = 0; j < nj; j++)
        a32[j] = 0;
    for (int32_t oy = oy0; oy < oy1; oy++) {
        const int16_t *drow = delta + oy * ow;
        const int8_t *row = in + (oy * sh + y_off) * iw * ic + j0;
        for (int32_t ox = ox0; ox < ox1; ox++) {
            const int32_t dv = drow[ox];
            if (dv == 0)
                continue;
            dsum += dv;
            const int8_t *xp = row + (ox * sw + x_off) * ic;
            for (int32_t j = 0; j < nj; j++)
                a32[j] += dv * (int32_t)xp[j];
            if (++cnt == TL_UPD_FLUSH) {
                for (int32_t j = 0; j < nj; j++) {
                    acc[j] += a32[j];
                    a32[j] = 0;
                }
                cnt = 0;
            }
        }
    }
    for (int32_t j = 0; j < nj; j++)
        acc[j] += a32[j];
    return dsum;
}

void tl_upd_bias(const tl_model *m, tl_layer *L, int32_t c, int64_t acc_b, int32_t Ec, uint32_t rnd_key,
                 int64_t *db_preview)
{
    int32_t bm, bs;
    int64_t q16;
    tl_upd_combine(L->bupd_mult[c], L->bupd_shift[c], L->lr_mult, L->lr_shift, &bm, &bs);
    const int64_t db = tl_scale_update(acc_b, bm, bs, Ec, m->cfg.rounding, tl_mix32(rnd_key), db_preview ? &q16 : NULL);
    if (db_preview)
        db_preview[c] = -q16;
    else
        L->bias[c] = (int32_t)TL_CLAMP((int64_t)L->bias[c] - db, INT32_MIN, INT32_MAX);
}

/* The delta map, one pooling cell at a time (classifier: one cell, one position). */
int64_t tl_upd_delta_map(const tl_layer *L, const int32_t *d, int32_t rs, const int8_t *out, int classifier,
                         int16_t *delta, int32_t *nonzero)
{
    const int32_t oh = L->out_h, ow = L->out_w, oc = L->out_c;
    const int32_t p = classifier ? 1 : L->pool;
    const int32_t bh = oh / p, bw = ow / p;
    const int leaky = L->act == TL_ACT_LEAKY;
    int64_t acc_b = 0;
    int32_t nz = 0;
    for (int32_t cy = 0; cy < p; cy++) {
        for (int32_t cx = 0; cx < p; cx++) {
            const int32_t v0 = tl_upd_cell_signal(d[classifier ? 0 : cy * p + cx], rs);
            if (!classifier && !leaky) {
                /* f' is 0 or 1: the cell adds v0 once per position left open by the clamp */
                const int32_t lo = L->act_min, hi = L->act_max;
                const int16_t v16 = (int16_t)v0;
                int32_t open = 0;
                for (int32_t oy = cy * bh; oy < (cy + 1) * bh; oy++) {
                    const int8_t *h = out + (oy * ow + cx * bw) * oc;
                    int16_t *drow = delta + oy * ow + cx * bw;
                    for (int32_t k = 0; k < bw; k++, h += oc) {
                        const int32_t on = *h > lo && *h < hi;
                        drow[k] = on ? v16 : 0;
                        open += on;
                    }
                }
                acc_b += (int64_t)v0 * open;
                nz |= open ? v0 : 0;
                continue;
            }
            for (int32_t oy = cy * bh; oy < (cy + 1) * bh; oy++) {
                const int8_t *hrow = out + oy * ow * oc;
                int16_t *drow = delta + oy * ow;
                for (int32_t ox = cx * bw; ox < (cx + 1) * bw; ox++) {
                    int32_t v = v0;
                    if (!classifier) {
                        /* f'(z) read off the stored output: 0 where the clamp (ReLU, ReLU6,
                         * int8 saturation) was active, the slope below zero for LeakyReLU */
                        const int32_t h = hrow[ox * oc];
                        if (h <= L->act_min || h >= L->act_max)
                            v = 0;
                        else if (leaky && h < L->out_zp)
                            v = tl_requantize(v, L->leaky_mult, L->leaky_shift);
                    }
                    drow[ox] = (int16_t)v;
                    acc_b += v;
                    nz |= v;
                }
            }
        }
    }
    *nonzero = nz;
    return acc_b;
}

void tl_upd_fc(const tl_layer *L, const tl_upd_row *u, int32_t c, int32_t delta, const int8_t *in)
{
    /* one position, so the product is the gradient */
    const int32_t in_n = tl_layer_in_bytes(L);
    const int64_t dv = delta;
    int64_t acc[TL_UPD_JB];
    for (int32_t k0 = 0; k0 < in_n; k0 += TL_UPD_JB) {
        const int32_t nk = TL_MIN(TL_UPD_JB, in_n - k0);
        for (int32_t k = 0; k < nk; k++)
            acc[k] = dv * ((int32_t)in[k0 + k] - L->in_zp);
        tl_upd_apply_row(u, acc, nk, c * in_n + k0, 1);
    }
}

/* ---------------------------------------------------------------- one layer */
void tl_lls_update_ref(tl_model *m, int32_t i, const tl_arena *a, const int8_t *in, const int8_t *out, int32_t E,
                       int classifier, int64_t *dw_preview, int64_t *db_preview)
{
    tl_layer *L = &m->layers[i];
    const int32_t *d = a->signal;
    int16_t *delta = a->delta;
    const int32_t oh = L->out_h, ow = L->out_w, oc = L->out_c;
    const int32_t p = classifier ? 1 : L->pool;
    const int32_t n_w = (int32_t)tl_layer_n_weights(L);
    const uint32_t prefix = tl_upd_prefix(m->cfg.seed, m->step, (uint32_t)i);
    int64_t acc[TL_UPD_JB];
    for (int32_t c = 0; c < oc; c++) {
        /* channel c's own block exponent: its signals may be far below the layer's largest, so
         * each channel rescales its slice of the 30-bit signal to 15 bits before the int16 map */
        const int32_t t0 = classifier ? c : c * p * p, nt = classifier ? 1 : p * p;
        const int32_t rs = tl_upd_channel_shift(d + t0, nt);
        const int32_t Ec = E - rs;
        int32_t nonzero = 0;
        const int64_t acc_b = tl_upd_delta_map(L, d + t0, rs, out + c, classifier, delta, &nonzero);
        if (!nonzero && !dw_preview)
            continue;
        const tl_upd_row u = tl_upd_channel(m, L, c, Ec, prefix, dw_preview);
        if (L->kind == TL_LAYER_FC) {
            tl_upd_fc(L, &u, c, delta[0], in);
        } else {
            /* conv (1x1 included) and depthwise: dW[c][fy][fx][j] = sum over the output positions
             * whose tap (fy, fx) falls inside the image of delta(pos) (x(tap, j) - zp). The zero
             * point comes out as zp * sum(delta over those positions), exactly. */
            const int dw_kind = L->kind == TL_LAYER_DWCONV;
            const int32_t kh = L->k_h, kw = L->k_w, ic = L->in_c, iw = L->in_w, ih = L->in_h;
            const int32_t n_ci = dw_kind ? 1 : ic;
            for (int32_t fy = 0; fy < kh; fy++) {
                int32_t oy0, oy1;
                tl_valid_range(oh, ih, L->stride_h, L->pad_top, fy, &oy0, &oy1);
                for (int32_t fx = 0; fx < kw; fx++) {
                    int32_t ox0, ox1;
                    tl_valid_range(ow, iw, L->stride_w, L->pad_left, fx, &ox0, &ox1);
                    for (int32_t j0 = 0; j0 < n_ci; j0 += TL_UPD_JB) {
                        const int32_t nj = TL_MIN(TL_UPD_JB, n_ci - j0);
                        for (int32_t j = 0; j < nj; j++)
                            acc[j] = 0;
                        const int64_t dsum = tap_corr(delta, ow, in, iw, ic, L->stride_h, L->stride_w,
                                                      oy0, oy1, ox0, ox1, fy - L->pad_top, fx - L->pad_left,
                                                      dw_kind ? c : j0, nj, acc);
                        for (int32_t j = 0; j < nj; j++)
                            acc[j] -= (int64_t)L->in_zp * dsum;
                        if (dw_kind)
                            tl_upd_apply_row(&u, acc, 1, (fy * kw + fx) * oc + c, 1);
                        else
                            tl_upd_apply_row(&u, acc, nj, ((c * kh + fy) * kw + fx) * ic + j0, 1);
                    }
                }
            }
        }
        tl_upd_bias(m, L, c, acc_b, Ec, prefix ^ (uint32_t)(n_w + c), db_preview);
    }
}
