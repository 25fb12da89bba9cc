/* The LLS update (and the head's pooling) on the Cortex-M DSP extension: the integers of
 * tl_lls_update.c / tl_lls.c, computed two output positions per SMLAD.
 *
 *   tl_lls_update_dsp   tl_lls_update_ref's channel loop with these inner steps:
 *     delta_clamp_dsp   the delta map of a ReLU / ReLU6 / linear hidden layer
 *     corr_apply_dsp    small 1x1 layers: every gradient fits int32, applied as soon as it is done
 *     dw3x3_grad        3x3 depthwise: the nine taps of a channel in three passes
 *     tap_corr_dsp      every other conv tap (tap_corr's correlation), zero point included
 *     apply_row_dsp     the rounding and saturating subtraction with one SMULL per weight
 *   tl_lls_pool_dsp     the head's pooled sums, four channels per SXTAB16
 * Every int32 partial sum is flushed to int64 before it can overflow (bounds at each use), so
 * only the order of exact additions differs from the portable loops (bench/mcu_perf.py and
 * tests/test_firmware.py hold the two builds to the same weights). */
#include "tl_lls.h"

#if TL_HAVE_DSP

/* ---------------------------------------------------------------- the rounding update */
/* tl_upd_apply_row(u, acc, n, idx0, stride) for the usual rounding shifts r = 31 + Ec - ws in [32, 94]
 * but 63 (upd_fast_r), gradients |a| < 2^31, prod = a * mult (|prod| < 2^62).
 *   r in [32, 62] ("small", s = r - 32 in [0, 30]): the portable rule is floor(prod / 2^r) plus 1
 *     when rnd < F, F the 32 fraction bits under bit r. With R = ~rnd = 2^32 - 1 - rnd that is
 *     floor((prod + R 2^s) / 2^r) (the carry of F + R into bit 32 is [F > rnd]; the bits under F
 *     cannot carry), so one UMULL (R 2^s), one SMLAL (+ prod) and the high word shifted by s give
 *     the decrement; R 2^s < 2^62 keeps the sum inside int64.
 *   r in [64, TL_UPD_R_MAX] ("big", s = r - 64): the floor is 0 or -1 (hi >> 31), the fraction's
 *     top 32 bits hi >> s. tl_scale_update shifts prod right by r - 62 first when r > 62, which
 *     leaves the same floor and the same 32 fraction bits below bit r.
 * The weight takes the decrement with a saturating QSUB, then saturates to [-127, 127]: any
 * |dw| >= 255 clamps a weight in [-127, 127] to the same bound. */
/* The constants of the loop below, as locals (the int8 weight stores may alias *u). */
typedef struct {
    int32_t s, mult;
    uint32_t p2s; /* 2^s (small shifts) */
    uint32_t prefix;
    int8_t *wt;
} upd_fast;

#define TL_UPD_R_MAX 94
/* the rounding shifts the loops below take (r = 63 would overflow the small case's sum) */
static inline int upd_fast_r(int32_t r)
{
    return r >= 32 && r <= TL_UPD_R_MAX && r != 63;
}

static inline upd_fast upd_fast_of(const tl_upd_row *u)
{
    upd_fast f;
    const int32_t r = 31 + u->Ec - u->ws;
    f.s = r <= 63 ? r - 32 : r - 64;
    f.p2s = (uint32_t)1 << (f.s & 31);
    f.mult = u->wm;
    f.prefix = u->prefix;
    f.wt = u->weights;
    return f;
}

/* One weight's update from a gradient with |a| < 2^31. */
static inline __attribute__((always_inline)) void upd_one_fast(const upd_fast *f, int32_t a, int32_t idx,
                                                               const int nearest, const int big)
{
    if (a == 0) { /* no gradient (sparse inputs make it common): dw = 0 + [rnd < 0] = 0, no hash needed */
        if (f->wt[idx] < -127)
            f->wt[idx] = -127;
        return;
    }
    const uint32_t rnd = nearest ? 0x7FFFFFFFu : tl_mix32(f->prefix ^ (uint32_t)idx);
    int32_t dw;
    if (big) {
        int32_t hi;
        uint32_t lo;
        __asm__("smull %0, %1, %2, %3" : "=&r"(lo), "=&r"(hi) : "r"(a), "r"(f->mult)); /* a * mult */
        (void)lo;
        dw = (hi >> 31) + ((uint32_t)(hi >> f->s) > rnd ? 1 : 0);
    } else {
        uint32_t lo;
        int32_t hi;
        __asm__("umull %0, %1, %2, %3" : "=&r"(lo), "=&r"(hi) : "r"(~rnd), "r"(f->p2s)); /* R 2^s */
        __asm__("smlal %0, %1, %2, %3" : "+&r"(lo), "+&r"(hi) : "r"(a), "r"(f->mult));   /* + a * mult */
        dw = hi >> f->s;
    }
    int32_t v = __qsub((int32_t)f->wt[idx], dw);
    /* saturate to [-127, 127]: SSAT to [-128, 127], then -128 -> -127 (gcc adds a sign extension) */
    __asm__("ssat %0, #8, %0\n\t"
            "cmn %0, #127\n\t"
            "it lt\n\t"
            "mvnlt %0, #126"
            : "+r"(v)
            :
            : "cc");
    f->wt[idx] = (int8_t)v;
}

/* always inlined: each call site below is one specialised copy (constant nearest, big) */
static inline __attribute__((always_inline)) void apply_row_dsp_loop(const tl_upd_row *u, const int64_t *acc, int32_t n,
                                                                     int32_t idx0, int32_t stride, const int nearest,
                                                                     const int big)
{
    const upd_fast f = upd_fast_of(u);
    for (int32_t k = 0, idx = idx0; k < n; k++, idx += stride, acc++) {
        const int64_t a = *acc;
        const int32_t a32 = (int32_t)a;
        if ((int32_t)(a >> 32) != (a32 >> 31) || a32 == INT32_MIN) { /* |a| >= 2^31: the general path */
            tl_upd_apply_one(u, a, idx);
            continue;
        }
        upd_one_fast(&f, a32, idx, nearest, big);
    }
}

/* kept out of tl_lls_update_dsp: inlined there, its loop invariants spill */
static __attribute__((noinline)) void apply_row_dsp(const tl_upd_row *u, const int64_t *acc, int32_t n, int32_t idx0,
                                                    int32_t stride)
{
    const int big = 31 + u->Ec - u->ws > 63; /* one copy of the loop per case, each without the tests */
    if (u->rounding == TL_ROUND_NEAREST) {
        if (big)
            apply_row_dsp_loop(u, acc, n, idx0, stride, 1, 1);
        else
            apply_row_dsp_loop(u, acc, n, idx0, stride, 1, 0);
    } else {
        if (big)
            apply_row_dsp_loop(u, acc, n, idx0, stride, 0, 1);
        else
            apply_row_dsp_loop(u, acc, n, idx0, stride, 0, 0);
    }
}

#define TL_UPD_PAIRS (TL_UPD_FLUSH / 2) /* position pairs per int32 partial sum */
/* The channels left over from the groups of four (one to three; depthwise: one), all in one pass
 * over the positions: the two positions' inputs of a channel are single bytes, packed with PKHBT.
 * s[k] gets sum delta x of channel k. */
static inline void corr_tail(const int16_t *delta, int32_t ow, const int8_t *in, int32_t row_bytes, int32_t sh,
                             int32_t step, int32_t oy0, int32_t oy1, int32_t ox0, int32_t npair, int odd,
                             int32_t off, const int nt, int64_t *s)
{
    int64_t s0 = 0, s1 = 0, s2 = 0;
    for (int32_t oy = oy0; oy < oy1; oy++) {
        const int16_t *drow = delta + oy * ow + ox0;
        const int8_t *xrow = in + (oy * sh * row_bytes + off + ox0 * step);
        for (int32_t k0 = 0; k0 < npair; k0 += TL_UPD_PAIRS) {
            const int32_t k1 = TL_MIN(npair, k0 + TL_UPD_PAIRS);
            const int8_t *xp = xrow + 2 * k0 * step;
            int32_t a0 = 0, a1 = 0, a2 = 0;
            for (int32_t k = k0; k < k1; k++, xp += 2 * step) {
                const int32_t dd = (int32_t)tl_rd32(drow + 2 * k);
                if (dd == 0)
                    continue;
                a0 = __smlad(dd, tl_pk_bt(xp[0], xp[step]), a0);
                if (nt > 1)
                    a1 = __smlad(dd, tl_pk_bt(xp[1], xp[step + 1]), a1);
                if (nt > 2)
                    a2 = __smlad(dd, tl_pk_bt(xp[2], xp[step + 2]), a2);
            }
            s0 += a0;
            s1 += a1;
            s2 += a2;
        }
        if (odd) {
            const int32_t dv = drow[2 * npair];
            const int8_t *xp = xrow + 2 * npair * step;
            s0 += dv * xp[0];
            if (nt > 1)
                s1 += dv * xp[1];
            if (nt > 2)
                s2 += dv * xp[2];
        }
    }
    s[0] = s0;
    if (nt > 1)
        s[1] = s1;
    if (nt > 2)
        s[2] = s2;
}

/* tap_corr on the DSP extension: two output positions per SMLAD. The int16 deltas of positions
 * ox, ox+1 are adjacent in the map (one word: d0 | d1 << 16); the int8 inputs of the two positions
 * are unpacked with SXTB16 and paired per channel with PKHBT / PKHTB, so each SMLAD adds
 * d0 x0[j] + d1 x1[j]. Four input channels per pass stay in registers over the rectangle; every
 * int32 partial sum takes at most TL_UPD_FLUSH products (128 pairs) before it goes to int64: exact.
 * The one to three channels left over from the groups of four go through corr_tail together, the
 * odd last position of a row through plain products. Unlike tap_corr it stores the finished
 * gradient, zero point included: acc[j] = sum delta (x - zp) = sum delta x - zp sum delta. */
static void tap_corr_dsp(const int16_t *delta, int32_t ow, const int8_t *in, int32_t iw, int32_t ic,
                         int32_t sh, int32_t sw, int32_t oy0, int32_t oy1, int32_t ox0, int32_t ox1,
                         int32_t y_off, int32_t x_off, int32_t j0, int32_t nj, int32_t zp, int64_t *acc)
{
    const int32_t step = sw * ic; /* bytes between the inputs of neighbouring positions */
    const int32_t npair = (ox1 - ox0) / 2;
    const int odd = (ox1 - ox0) & 1;
    int64_t dsum = 0;
    for (int32_t oy = oy0; oy < oy1; oy++) { /* a row sums at most 4096 deltas: int32 is exact */
        const int16_t *drow = delta + oy * ow + ox0;
        int32_t r = 0;
        for (int32_t k = 0; k < npair; k++)
            r = __smlad((int32_t)tl_rd32(drow + 2 * k), 0x00010001, r);
        if (odd)
            r += drow[2 * npair];
        dsum += r;
    }
    const int64_t zpd = (int64_t)zp * dsum;
    int32_t j = 0;
    for (; j + 3 < nj; j += 4) {
        int64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (int32_t oy = oy0; oy < oy1; oy++) {
            const int16_t *drow = delta + oy * ow + ox0;
            const int8_t *xrow = in + (oy * sh + y_off) * iw * ic + (ox0 * sw + x_off) * ic + j0 + j;
            for (int32_t k0 = 0; k0 < npair; k0 += TL_UPD_PAIRS) {
                const int32_t k1 = TL_MIN(npair, k0 + TL_UPD_PAIRS);
                int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
                const int8_t *xp = xrow + 2 * k0 * step;
                for (int32_t k = k0; k < k1; k++, xp += 2 * step) {
                    const int32_t dd = (int32_t)tl_rd32(drow + 2 * k);
                    if (dd == 0)
                        continue;
                    /* bytes [x0_0 x0_1 x1_0 x1_1] and [x0_2 x0_3 x1_2 x1_3]: SXTB16 of these gives the
                     * per-channel position pairs directly (two packs instead of four) */
                    const uint32_t x0 = tl_rd32(xp), x1 = tl_rd32(xp + step);
                    const uint32_t lo = (uint32_t)tl_pk_bt((int32_t)x0, (int32_t)x1);
                    const uint32_t hi = (uint32_t)tl_pk_tb((int32_t)x0, (int32_t)x1);
                    a0 = __smlad(dd, (int32_t)__sxtb16(lo), a0); /* channel j */
                    a1 = __smlad(dd, tl_sxtb16_ror8(lo), a1);    /* channel j+1 */
                    a2 = __smlad(dd, (int32_t)__sxtb16(hi), a2); /* channel j+2 */
                    a3 = __smlad(dd, tl_sxtb16_ror8(hi), a3);    /* channel j+3 */
                }
                s0 += a0;
                s1 += a1;
                s2 += a2;
                s3 += a3;
            }
            if (odd) {
                const int32_t dv = drow[2 * npair];
                const int8_t *xp = xrow + 2 * npair * step;
                s0 += dv * (int32_t)xp[0];
                s1 += dv * (int32_t)xp[1];
                s2 += dv * (int32_t)xp[2];
                s3 += dv * (int32_t)xp[3];
            }
        }
        acc[j] = s0 - zpd;
        acc[j + 1] = s1 - zpd;
        acc[j + 2] = s2 - zpd;
        acc[j + 3] = s3 - zpd;
    }
    if (j < nj) {
        const int32_t nt = nj - j, off = y_off * iw * ic + x_off * ic;
        const int8_t *inj = in + j0 + j;
        if (nt == 1)
            corr_tail(delta, ow, inj, iw * ic, sh, step, oy0, oy1, ox0, npair, odd, off, 1, acc + j);
        else if (nt == 2)
            corr_tail(delta, ow, inj, iw * ic, sh, step, oy0, oy1, ox0, npair, odd, off, 2, acc + j);
        else
            corr_tail(delta, ow, inj, iw * ic, sh, step, oy0, oy1, ox0, npair, odd, off, 3, acc + j);
        for (; j < nj; j++)
            acc[j] -= zpd;
    }
}


/* The nine tap gradients of one channel of a 3x3 depthwise layer (the tap-by-tap path walks the
 * map nine times with a call per tap, and small maps are mostly overhead): acc[t] = sum delta(pos)
 * x(pos, t), dsum[t] = sum delta(pos), both over the positions whose tap t = fy * 3 + fx falls
 * inside the image. in points at the channel (stride ch between pixels). One pass per tap row fy
 * over the rows valid for it, three sums: the columns valid for all three taps two positions per
 * SMLAD (the deltas of neighbouring positions are one word; their inputs are paired with PKHBT),
 * the few edge columns one product at a time with their own validity. Every int32 partial sum
 * takes at most TL_UPD_PAIRS SMLADs or products before it goes to int64 (checked per row, so the
 * caller keeps ow <= TL_UPD_PAIRS): exact. */
static __attribute__((noinline)) void dw3x3_grad(const int16_t *delta, int32_t oh, int32_t ow, const int8_t *in,
                                                 int32_t ih, int32_t iw, int32_t ch, int32_t sh, int32_t sw,
                                                 int32_t pt, int32_t pl, int64_t *acc, int64_t *dsum)
{
    const int32_t rs = iw * ch, step = sw * ch;
    int32_t cx0[3], cx1[3];
    for (int32_t fx = 0; fx < 3; fx++)
        tl_valid_range(ow, iw, sw, pl, fx, &cx0[fx], &cx1[fx]);
    /* the columns valid for every fx */
    const int32_t mx0 = TL_MAX(TL_MAX(cx0[0], cx0[1]), cx0[2]);
    const int32_t mx1 = TL_MAX(mx0, TL_MIN(TL_MIN(cx1[0], cx1[1]), cx1[2]));
    const int32_t npair = (mx1 - mx0) / 2, mend = mx0 + 2 * npair; /* pairs cover [mx0, mend) */
    for (int32_t fy = 0; fy < 3; fy++) {
        int32_t ry0, ry1;
        tl_valid_range(oh, ih, sh, pt, fy, &ry0, &ry1);
        int64_t s0 = 0, s1 = 0, s2 = 0, d0 = 0, d1 = 0, d2 = 0;
        int32_t a0 = 0, a1 = 0, a2 = 0, n = 0;
        for (int32_t oy = ry0; oy < ry1; oy++) {
            const int16_t *drow = delta + oy * ow;
            const int8_t *xrow = in + (oy * sh - pt + fy) * rs; /* this row's input, column 0 */
            const int8_t *xp = xrow + (mx0 * sw - pl) * ch;
            if (n + ow > TL_UPD_PAIRS) { /* a row adds at most ow SMLADs or products to each sum */
                s0 += a0;
                s1 += a1;
                s2 += a2;
                a0 = a1 = a2 = n = 0;
            }
            n += ow;
            int32_t r = 0; /* sum of the row's paired deltas (at most 4096: int32 is exact) */
            for (int32_t k = 0; k < npair; k++, xp += 2 * step) {
                const int32_t dd = (int32_t)tl_rd32(drow + mx0 + 2 * k);
                if (dd == 0)
                    continue;
                r = __smlad(dd, 0x00010001, r);
                const int8_t *xq = xp + step;
                a0 = __smlad(dd, tl_pk_bt(xp[0], xq[0]), a0);
                a1 = __smlad(dd, tl_pk_bt(xp[ch], xq[ch]), a1);
                a2 = __smlad(dd, tl_pk_bt(xp[2 * ch], xq[2 * ch]), a2);
            }
            d0 += r;
            d1 += r;
            d2 += r;
            /* the other columns: the edges, and an odd last middle column */
            for (int32_t ox = 0; ox < ow; ox++) {
                if (ox == mx0)
                    ox = mend;
                if (ox >= ow)
                    break;
                const int32_t d = drow[ox];
                if (d == 0)
                    continue;
                const int8_t *x = xrow + (ox * sw - pl) * ch;
                if (ox >= cx0[0] && ox < cx1[0]) {
                    a0 += d * x[0];
                    d0 += d;
                }
                if (ox >= cx0[1] && ox < cx1[1]) {
                    a1 += d * x[ch];
                    d1 += d;
                }
                if (ox >= cx0[2] && ox < cx1[2]) {
                    a2 += d * x[2 * ch];
                    d2 += d;
                }
            }
        }
        acc[fy * 3] = s0 + a0;
        acc[fy * 3 + 1] = s1 + a1;
        acc[fy * 3 + 2] = s2 + a2;
        dsum[fy * 3] = d0;
        dsum[fy * 3 + 1] = d1;
        dsum[fy * 3 + 2] = d2;
    }
}

#define TL_UPD_SMALL 256 /* positions of a map whose 1x1 gradients fit int32: 256 * 32767 * 255 < 2^31 */
#define TL_UPD_SMALL_IC 258 /* input channels for which (TL_UPD_SMALL - 2) ic, the largest pair offset, fits 16 bits */

/* A 1x1 layer with at most TL_UPD_SMALL positions, one output channel: every weight's gradient
 * sum delta (x - zp) fits int32 (so no int64 partial sums, no range checks), and is applied as soon
 * as its group of four input channels is done. The correlation is tap_corr_dsp's (two positions
 * per SMLAD); an odd last position is the pair (delta, 0). */
static inline __attribute__((always_inline)) void corr_apply_loop(const int16_t *delta, int32_t np, const int8_t *in,
                                                                  int32_t ic, int32_t zp, const tl_upd_row *u,
                                                                  int32_t idx0, const int nearest, const int big)
{
    const int32_t npair = np / 2;
    /* the position pairs with a nonzero delta, listed once (delta words and input offsets) for
     * all the groups of input channels below */
    int32_t dl[TL_UPD_SMALL / 2];
    uint16_t ol[TL_UPD_SMALL / 2]; /* byte offsets 2 k ic < 2^16 (TL_UPD_SMALL_IC): 256 B less stack
                                     * here, on the deepest training call chain, at no cost (LDRH) */
    int32_t nl = 0, ds = 0;
    for (int32_t k = 0; k < npair; k++) {
        const int32_t dd = (int32_t)tl_rd32(delta + 2 * k);
        ds = __smlad(dd, 0x00010001, ds);
        if (dd != 0) {
            dl[nl] = dd;
            ol[nl++] = (uint16_t)(2 * k * ic);
        }
    }
    const uint32_t dlast = (np & 1) ? (uint16_t)delta[np - 1] : 0u;
    ds += (int16_t)dlast;
    const int32_t zpd = zp * ds; /* |zp sum delta| <= 128 * 256 * 32767 < 2^31 */
    const upd_fast f = upd_fast_of(u);
    int32_t j = 0;
    for (; j + 3 < ic; j += 4) {
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        for (int32_t l = 0; l < nl; l++) {
            const int32_t dd = dl[l];
            const int8_t *xp = in + j + ol[l];
            const uint32_t x0 = tl_rd32(xp), x1 = tl_rd32(xp + ic);
            const uint32_t lo = (uint32_t)tl_pk_bt((int32_t)x0, (int32_t)x1);
            const uint32_t hi = (uint32_t)tl_pk_tb((int32_t)x0, (int32_t)x1);
            a0 = __smlad(dd, (int32_t)__sxtb16(lo), a0);
            a1 = __smlad(dd, tl_sxtb16_ror8(lo), a1);
            a2 = __smlad(dd, (int32_t)__sxtb16(hi), a2);
            a3 = __smlad(dd, tl_sxtb16_ror8(hi), a3);
        }
        if (dlast) {
            const uint32_t x0 = tl_rd32(in + j + 2 * npair * ic);
            const uint32_t lo = (uint32_t)tl_pk_bt((int32_t)x0, (int32_t)x0);
            const uint32_t hi = (uint32_t)tl_pk_tb((int32_t)x0, (int32_t)x0);
            a0 = __smlad((int32_t)dlast, (int32_t)__sxtb16(lo), a0);
            a1 = __smlad((int32_t)dlast, tl_sxtb16_ror8(lo), a1);
            a2 = __smlad((int32_t)dlast, (int32_t)__sxtb16(hi), a2);
            a3 = __smlad((int32_t)dlast, tl_sxtb16_ror8(hi), a3);
        }
        upd_one_fast(&f, a0 - zpd, idx0 + j, nearest, big);
        upd_one_fast(&f, a1 - zpd, idx0 + j + 1, nearest, big);
        upd_one_fast(&f, a2 - zpd, idx0 + j + 2, nearest, big);
        upd_one_fast(&f, a3 - zpd, idx0 + j + 3, nearest, big);
    }
    for (; j < ic; j++) { /* input channels left over from the groups of four */
        int32_t a = 0;
        for (int32_t k = 0; k < np; k++)
            a += (int32_t)delta[k] * in[k * ic + j];
        upd_one_fast(&f, a - zpd, idx0 + j, nearest, big);
    }
}

static __attribute__((noinline)) void corr_apply_dsp(const int16_t *delta, int32_t np, const int8_t *in, int32_t ic,
                                                     int32_t zp, const tl_upd_row *u, int32_t idx0)
{
    const int big = 31 + u->Ec - u->ws > 63;
    if (u->rounding == TL_ROUND_NEAREST) {
        if (big)
            corr_apply_loop(delta, np, in, ic, zp, u, idx0, 1, 1);
        else
            corr_apply_loop(delta, np, in, ic, zp, u, idx0, 1, 0);
    } else {
        if (big)
            corr_apply_loop(delta, np, in, ic, zp, u, idx0, 0, 1);
        else
            corr_apply_loop(delta, np, in, ic, zp, u, idx0, 0, 0);
    }
}

#define TL_CLAMP_MAX_P 8 /* pooling grids up to 8x8 (tl_model's choose_pool) take the row-wise loop */

/* tl_upd_cell_signal in 32 bits (|dv| < 2^30): tl_shr_round by rs, clamped to +-32767 */
static inline int32_t cell_signal_dsp(int32_t dv, int32_t half, int32_t rs)
{
    const int32_t v0 = dv >= 0 ? (dv + half) >> rs : -((-dv + half) >> rs);
    return TL_CLAMP(v0, -32767, 32767);
}

/* v & ~(m >> 31): v where m >= 0, else 0, as one BIC with a shifted operand (gcc 12 emits an ASR
 * and a BIC) */
static inline int32_t bic_sign(int32_t v, int32_t m)
{
    int32_t r;
    __asm__("bic %0, %1, %2, asr #31" : "=r"(r) : "r"(v), "r"(m));
    return r;
}

/* One output row of a channel: p segments of bw positions (pooling cells), drow[k ds] = v[cell]
 * where output k (stride oc) is open (lo1 <= h <= hi1), else 0. Returns the row's sum (at most
 * ow * 32767: the caller keeps ow < 2^16); *nz gets each segment's sum ORed in. Inlined with bw a
 * constant for the usual cell widths. */
static inline __attribute__((always_inline)) int32_t clamp_row(const int8_t *h, int32_t oc, const int32_t *v, int32_t p,
                                                               int32_t lo1, int32_t hi1, int16_t *drow, int32_t *nz,
                                                               const int32_t bw, const int32_t ds)
{
    int32_t row = 0, z = 0;
    for (int32_t cx = 0; cx < p; cx++, drow += bw * ds) {
        const int32_t v0 = v[cx];
        int32_t seg = 0;
#pragma GCC unroll 8
        for (int32_t k = 0; k < bw; k++, h += oc) {
            const int32_t hv = *h;
            /* closed (h <= lo or h >= hi) iff (h - lo1) | (hi1 - h) is negative */
            const int32_t val = bic_sign(v0, (hv - lo1) | (hi1 - hv));
            drow[k * ds] = (int16_t)val;
            seg += val;
        }
        row += seg;
        z |= seg;
    }
    *nz |= z;
    return row;
}

/* The cell-by-cell loop, for pooling grids finer than TL_CLAMP_MAX_P (inlined: no frame of its
 * own under dw_group_update's). */
static inline __attribute__((always_inline)) int64_t delta_clamp_cells(const int32_t *d, int32_t p, int32_t half, int32_t rs, const int8_t *out,
                                 int32_t ow, int32_t oc, int32_t bh, int32_t bw, int32_t lo1, int32_t hi1,
                                 int16_t *delta, int32_t ds, int32_t *nonzero)
{
    int64_t acc_b = 0;
    int32_t nz = 0;
    for (int32_t cy = 0; cy < p; cy++) {
        for (int32_t cx = 0; cx < p; cx++) {
            const int32_t v0 = cell_signal_dsp(d[cy * p + cx], half, rs);
            int32_t open = bh * bw; /* minus one per closed position below */
            for (int32_t oy = cy * bh; oy < (cy + 1) * bh; oy++) {
                const int8_t *h = out + (oy * ow + cx * bw) * oc;
                int16_t *drow = delta + (oy * ow + cx * bw) * ds;
                for (int32_t k = 0; k < bw; k++, h += oc) {
                    const int32_t closed = (((int32_t)*h - lo1) | (hi1 - (int32_t)*h)) >> 31;
                    drow[k * ds] = (int16_t)(v0 & ~closed);
                    open += closed;
                }
            }
            acc_b += (int64_t)v0 * open;
            nz |= open ? v0 : 0;
        }
    }
    *nonzero = nz;
    return acc_b;
}

/* ---------------------------------------------------------------- small 1x1 layers, input widened once */
/* corr_apply_dsp spends half of its inner loop widening the input (two loads, PKHBT/PKHTB, four
 * SXTB16 per position pair and group of four input channels), the same work for every output
 * channel. When the arena's free gap (past the layer's delta map, below the nearer of its input
 * and output) holds it, the layer's input is widened once into that gap, (x0[j], x1[j]) pairs as
 * the SMLADs take them, and each channel's loop is an LDRD of the list, an LDM and four SMLAD. */
typedef struct {
    const int32_t *wide; /* [group g][pair k][4 words]: lanes (x_2k[4g+t], x_2k+1[4g+t]), t = 0, 2, 1, 3 */
    int32_t *list;       /* per channel: (delta pair word, byte offset 16 k) of its nonzero pairs,
                          * padded to an even count with (0, 0) */
    int32_t npp;         /* position pairs, the last one (x, 0) when the positions are odd */
} corr_wide;

/* The gap's words (4-aligned start, 8 past the delta map), or 0 words when the pointers do not
 * tell (an input outside the arena is simply not a bound). The layer's input and output are in
 * the arena, at the two ends of the gap (tl_model.c's plan), except a model input staged elsewhere. */
static int32_t *arena_gap(const tl_arena *a, int32_t np, const int8_t *in, const int8_t *out, int32_t *n_words)
{
    const uintptr_t lo = ((uintptr_t)(a->delta + np) + 7u) & ~(uintptr_t)7u;
    uintptr_t hi = (uintptr_t)(a->act + a->act_size);
    const uintptr_t pi = (uintptr_t)in, po = (uintptr_t)out;
    if (pi >= lo && pi < hi)
        hi = pi;
    if (po >= lo && po < hi)
        hi = po;
    hi &= ~(uintptr_t)3u;
    *n_words = hi > lo ? (int32_t)((hi - lo) / 4u) : 0;
    return (int32_t *)lo;
}

/* Where the widened input of np positions of ic channels goes in the gap; 0 if it does not fit. */
static int corr_wide_of(const tl_arena *a, int32_t np, const int8_t *in, const int8_t *out, int32_t ic, corr_wide *w)
{
    int32_t room;
    int32_t *g = arena_gap(a, np, in, out, &room);
    const int32_t npp = (np + 1) / 2, ng = ic / 4;
    if (room < ng * npp * 4 + 2 * npp + 2) /* the list: at most npp entries and a pad */
        return 0;
    w->wide = g;
    w->list = g + ng * npp * 4;
    w->npp = npp;
    return 1;
}

/* Widens in (np positions of ic channels, ic a multiple of 4) into the gap; 0 if it does not fit.
 * Once per layer: the channels' calls find it with corr_wide_of. */
static __attribute__((noinline)) int corr_wide_make(const tl_arena *a, int32_t np, const int8_t *in,
                                                    const int8_t *out, int32_t ic)
{
    corr_wide w;
    if ((ic & 3) != 0 || !corr_wide_of(a, np, in, out, ic, &w))
        return 0;
    const int32_t npp = w.npp;
    int32_t *dst = (int32_t *)w.wide;
    for (int32_t j = 0; j < ic; j += 4) {
        for (int32_t k = 0; k < npp; k++, dst += 4) {
            const uint32_t x0 = tl_rd32(in + 2 * k * ic + j);
            const uint32_t x1 = 2 * k + 1 < np ? tl_rd32(in + (2 * k + 1) * ic + j) : 0u;
            const uint32_t lo = (uint32_t)tl_pk_bt((int32_t)x0, (int32_t)x1);
            const uint32_t hi = (uint32_t)tl_pk_tb((int32_t)x0, (int32_t)x1);
            dst[0] = (int32_t)__sxtb16(lo);
            dst[1] = tl_sxtb16_ror8(lo);
            dst[2] = (int32_t)__sxtb16(hi);
            dst[3] = tl_sxtb16_ror8(hi);
        }
    }
    return 1;
}

/* For every group g of four input channels (while sums < send; the group's block of the widened
 * input stride bytes after the previous one): sums[4 g + t] = a_init + sum over the list of
 * SMLAD(delta pair, widened word t of that pair), t = 0..3. The list has an even number >= 2 of
 * entries (corr_wide_loop pads it with a (0, 0) entry, which adds 0), taken two per pass: LDRD of
 * the entry, its offset plus the block, one LDM of the four words, four SMLAD. All in asm: gcc
 * would not keep the registers (the LDM fills r0-r3 in order; the entry's offset is loaded into r0
 * itself, LDM without writeback, so the loop fits thirteen registers) and kept the group loop's
 * counters on the stack (19 instructions per group around the entries, here 12; the per-layer
 * constants are read from memory once per group). */
static inline __attribute__((always_inline)) void corr_wide_groups(const int32_t *list, const int32_t *lend,
                                                                   const int32_t *base, int32_t stride, int32_t a_init,
                                                                   int32_t *sums, int32_t *send)
{
    register int32_t x0 __asm__("r0");
    register int32_t x1 __asm__("r1");
    register int32_t x2 __asm__("r2");
    register int32_t x3 __asm__("r3");
    int32_t a0, a1, a2, a3, dd;
    const int32_t *l;
    const int32_t *const klist = list;
    const int32_t kinit = a_init, kstride = stride;
    int32_t *const ksend = send;
    __asm__ volatile("2:\n\t"
                     "ldr     %[l], %[klist]\n\t"
                     "ldr     %[a0], %[kinit]\n\t"
                     "mov     %[a1], %[a0]\n\t"
                     "mov     %[a2], %[a0]\n\t"
                     "mov     %[a3], %[a0]\n\t"
                     "1:\n\t"
                     "ldrd    %[dd], %[x0], [%[l]], #8\n\t"
                     "add     %[x0], %[x0], %[base]\n\t"
                     "ldmia   %[x0], {r0, r1, r2, r3}\n\t"
                     "smlad   %[a0], %[dd], %[x0], %[a0]\n\t"
                     "smlad   %[a1], %[dd], %[x1], %[a1]\n\t"
                     "smlad   %[a2], %[dd], %[x2], %[a2]\n\t"
                     "smlad   %[a3], %[dd], %[x3], %[a3]\n\t"
                     "ldrd    %[dd], %[x0], [%[l]], #8\n\t"
                     "add     %[x0], %[x0], %[base]\n\t"
                     "ldmia   %[x0], {r0, r1, r2, r3}\n\t"
                     "smlad   %[a0], %[dd], %[x0], %[a0]\n\t"
                     "smlad   %[a1], %[dd], %[x1], %[a1]\n\t"
                     "smlad   %[a2], %[dd], %[x2], %[a2]\n\t"
                     "smlad   %[a3], %[dd], %[x3], %[a3]\n\t"
                     "cmp     %[l], %[end]\n\t"
                     "bne     1b\n\t"
                     "strd    %[a0], %[a1], [%[s]], #8\n\t"
                     "strd    %[a2], %[a3], [%[s]], #8\n\t"
                     "ldr     %[dd], %[kstride]\n\t"
                     "add     %[base], %[base], %[dd]\n\t"
                     "ldr     %[dd], %[ksend]\n\t"
                     "cmp     %[s], %[dd]\n\t"
                     "bne     2b"
                     : [a0] "=&r"(a0), [a1] "=&r"(a1), [a2] "=&r"(a2), [a3] "=&r"(a3), [l] "=&r"(l),
                       [dd] "=&r"(dd), [x0] "=&r"(x0), [x1] "=&r"(x1), [x2] "=&r"(x2), [x3] "=&r"(x3),
                       [base] "+r"(base), [s] "+r"(sums)
                     : [end] "r"(lend), [klist] "m"(klist), [kinit] "m"(kinit), [kstride] "m"(kstride),
                       [ksend] "m"(ksend)
                     : "cc", "memory");
}

/* corr_apply_loop on the widened input: the same products summed in the same order (the odd last
 * position is the pair (delta, 0) there, (x, 0) here), the same updates (each weight's depends on
 * its own sum and index only, so they may wait for all the sums: in sums[ic], the arena's wacc). */
static inline __attribute__((always_inline)) void corr_wide_loop(const int16_t *delta, int32_t np, const corr_wide *w,
                                                                 int32_t ic, int32_t zp, const tl_upd_row *u,
                                                                 int32_t idx0, int32_t *sums, const int nearest,
                                                                 const int big)
{
    const int32_t npair = np / 2;
    int32_t *lp = w->list;
    int32_t ds = 0;
    for (int32_t k = 0; k < npair; k++) {
        const int32_t dd = (int32_t)tl_rd32(delta + 2 * k);
        ds = __smlad(dd, 0x00010001, ds);
        if (dd != 0) {
            lp[0] = dd;
            lp[1] = 16 * k;
            lp += 2;
        }
    }
    if (np & 1) {
        const int32_t dlast = (uint16_t)delta[np - 1];
        ds += (int16_t)dlast;
        if (dlast != 0) {
            lp[0] = dlast;
            lp[1] = 16 * npair;
            lp += 2;
        }
    }
    if ((lp - w->list) & 2) { /* an odd count: pad with (0, 0) for corr_wide_groups' pairs of entries */
        lp[0] = 0;
        lp[1] = 0;
        lp += 2;
    }
    const int32_t zpd = zp * ds; /* |zp sum delta| <= 128 * 256 * 32767 < 2^31 */
    const upd_fast f = upd_fast_of(u);
    const int32_t *base = w->wide;
    /* every sum first (the gradient sum delta x - zp sum delta, |each| < 2^30), then one update
     * loop with its constants in registers */
    if (lp != w->list) {
        corr_wide_groups(w->list, lp, base, 16 * w->npp, -zpd, sums, sums + ic);
    } else {
        for (int32_t j = 0; j < ic; j++)
            sums[j] = -zpd;
    }
    for (int32_t j = 0; j < ic; j++)
        upd_one_fast(&f, sums[j], idx0 + j, nearest, big);
}

/* Returns 0 (and does nothing) when the input was not widened (corr_wide_make returned 0) or the
 * layer has no wacc; the caller then takes corr_apply_dsp. */
static __attribute__((noinline)) int corr_wide_dsp(const int16_t *delta, int32_t np, const tl_arena *a,
                                                   const int8_t *in, const int8_t *out, int32_t ic, int32_t zp,
                                                   const tl_upd_row *u, int32_t idx0)
{
    corr_wide wide;
    int32_t *sums = (int32_t *)(void *)a->wacc; /* in_c int64 of room in a trainable 1x1 layer (tl_model.c) */
    if ((ic & 3) != 0 || !sums || !corr_wide_of(a, np, in, out, ic, &wide))
        return 0;
    const corr_wide *w = &wide;
    const int big = 31 + u->Ec - u->ws > 63;
    if (u->rounding == TL_ROUND_NEAREST) {
        if (big)
            corr_wide_loop(delta, np, w, ic, zp, u, idx0, sums, 1, 1);
        else
            corr_wide_loop(delta, np, w, ic, zp, u, idx0, sums, 1, 0);
    } else {
        if (big)
            corr_wide_loop(delta, np, w, ic, zp, u, idx0, sums, 0, 1);
        else
            corr_wide_loop(delta, np, w, ic, zp, u, idx0, sums, 0, 0);
    }
    return 1;
}

/* tl_upd_delta_map of one output channel of a hidden layer whose f' is 0 or 1 (ReLU, ReLU6,
 * no activation), one pooling cell at a time, as its portable loop: d the channel's p*p signals,
 * out its outputs (stride oc). Kept out of tl_lls_update_dsp for its registers; the rounding shift of
 * the 30-bit signals is done in 32 bits (|d| < 2^30) and f' as a sign mask. Returns
 * the bias gradient sum; *nonzero as the portable loop. */
static inline __attribute__((always_inline)) int64_t delta_clamp_body(const int32_t *d, int32_t p, int32_t rs,
                                                                       const int8_t *out, int32_t ow, int32_t oc,
                                                                       int32_t bh, int32_t bw, int32_t lo, int32_t hi,
                                                                       int16_t *delta, int32_t *nonzero, const int32_t ds)
{
    const int32_t half = rs > 0 ? 1 << (rs - 1) : 0;
    const int32_t lo1 = lo + 1, hi1 = hi - 1; /* open iff lo1 <= h <= hi1 */
    int64_t acc_b = 0;
    int32_t nz = 0;
    if (bh == 1 && bw == 1) { /* one position per cell (p = oh = ow): cell t is position t */
        int32_t sum = 0;      /* at most 64 cells of |v0| <= 32767 */
        for (int32_t t = 0; t < p * p; t++) {
            const int32_t dv = d[t];
            int32_t v0 = dv >= 0 ? (dv + half) >> rs : -((-dv + half) >> rs);
            v0 = TL_CLAMP(v0, -32767, 32767);
            const int32_t h = out[t * oc];
            const int32_t v = bic_sign(v0, (h - lo1) | (hi1 - h));
            delta[t * ds] = (int16_t)v;
            sum += v;
            nz |= v;
        }
        *nonzero = nz;
        return sum;
    }
    if (p > TL_CLAMP_MAX_P || ow > 65535)
        return delta_clamp_cells(d, p, half, rs, out, ow, oc, bh, bw, lo1, hi1, delta, ds, nonzero);
    /* Row by row: a cell's positions in one output row are bw consecutive delta entries and
     * outputs oc bytes apart. A segment's delta values are v0 or 0, so its sum is v0 times its open
     * positions: the bias sum is the sum of the segment sums (as the portable v0 * open per cell),
     * and a segment sum is nonzero iff v0 != 0 and a position is open (the portable *nonzero). */
    int32_t v[TL_CLAMP_MAX_P];
    for (int32_t cy = 0; cy < p; cy++) {
        for (int32_t cx = 0; cx < p; cx++)
            v[cx] = cell_signal_dsp(d[cy * p + cx], half, rs);
        for (int32_t oy = cy * bh; oy < (cy + 1) * bh; oy++) {
            const int8_t *h = out + oy * ow * oc;
            int16_t *drow = delta + oy * ow * ds;
            int32_t row;
            if (bw == 3)
                row = clamp_row(h, oc, v, p, lo1, hi1, drow, &nz, 3, ds);
            else if (bw == 6)
                row = clamp_row(h, oc, v, p, lo1, hi1, drow, &nz, 6, ds);
            else if (bw == 2)
                row = clamp_row(h, oc, v, p, lo1, hi1, drow, &nz, 2, ds);
            else
                row = clamp_row(h, oc, v, p, lo1, hi1, drow, &nz, bw, ds);
            acc_b += row;
        }
    }
    *nonzero = nz;
    return acc_b;
}

static __attribute__((noinline)) int64_t delta_clamp_dsp(const int32_t *d, int32_t p, int32_t rs, const int8_t *out,
                                                         int32_t ow, int32_t oc, int32_t bh, int32_t bw, int32_t lo,
                                                         int32_t hi, int16_t *delta, int32_t *nonzero)
{
    return delta_clamp_body(d, p, rs, out, ow, oc, bh, bw, lo, hi, delta, nonzero, 1);
}

/* delta_clamp_dsp writing every fourth int16 (delta[4 pos]): the four interleaved maps of dw_group_update */
static __attribute__((noinline)) int64_t delta_clamp4_dsp(const int32_t *d, int32_t p, int32_t rs, const int8_t *out,
                                                          int32_t ow, int32_t oc, int32_t bh, int32_t bw, int32_t lo,
                                                          int32_t hi, int16_t *delta, int32_t *nonzero)
{
    return delta_clamp_body(d, p, rs, out, ow, oc, bh, bw, lo, hi, delta, nonzero, 4);
}

/* ---------------------------------------------------------------- 3x3 depthwise, four channels at a time */
/* dw3x3_grad4's inner loop over an even number (>= 2) of positions, two per pass: per position
 * the interleaved deltas (d0, d2), (d1, d3) (one LDRD), the four channels' inputs (one word) made
 * (x0 - zp, x2 - zp), (x1 - zp, x3 - zp) by two SXTAB16 onto nzp2, four SMLABB / SMLATT. Asm
 * because gcc spills an accumulator when it schedules the two positions' loads together (the
 * loop needs 13 registers); the same products in the same order as one position per pass. */
static inline __attribute__((always_inline)) void dw3x3_grad4_pairs(const uint32_t *dp, const uint32_t *dend,
                                                                    const int8_t *xp, int32_t step, uint32_t nzp2,
                                                                    int32_t *p0, int32_t *p1, int32_t *p2,
                                                                    int32_t *p3)
{
    int32_t a0 = *p0, a1 = *p1, a2 = *p2, a3 = *p3;
    uint32_t de, dodd, xv, xe;
    __asm__ volatile("1:\n\t"
                     "ldrd    %[de], %[dodd], [%[dp]], #16\n\t"
                     "ldr     %[xv], [%[xp]]\n\t"
                     "sxtab16 %[xe], %[nzp2], %[xv]\n\t"
                     "sxtab16 %[xv], %[nzp2], %[xv], ror #8\n\t"
                     "smlabb  %[a0], %[de], %[xe], %[a0]\n\t"
                     "smlatt  %[a2], %[de], %[xe], %[a2]\n\t"
                     "smlabb  %[a1], %[dodd], %[xv], %[a1]\n\t"
                     "smlatt  %[a3], %[dodd], %[xv], %[a3]\n\t"
                     "ldrd    %[de], %[dodd], [%[dp], #-8]\n\t"
                     "ldr     %[xv], [%[xp], %[step]]\n\t"
                     "sxtab16 %[xe], %[nzp2], %[xv]\n\t"
                     "sxtab16 %[xv], %[nzp2], %[xv], ror #8\n\t"
                     "smlabb  %[a0], %[de], %[xe], %[a0]\n\t"
                     "smlatt  %[a2], %[de], %[xe], %[a2]\n\t"
                     "smlabb  %[a1], %[dodd], %[xv], %[a1]\n\t"
                     "smlatt  %[a3], %[dodd], %[xv], %[a3]\n\t"
                     "add     %[xp], %[xp], %[step], lsl #1\n\t"
                     "cmp     %[dp], %[dend]\n\t"
                     "bcc     1b"
                     : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [dp] "+r"(dp), [xp] "+r"(xp),
                       [de] "=&r"(de), [dodd] "=&r"(dodd), [xv] "=&r"(xv), [xe] "=&r"(xe)
                     : [dend] "r"(dend), [step] "r"(step), [nzp2] "r"(nzp2)
                     : "cc", "memory");
    *p0 = a0;
    *p1 = a1;
    *p2 = a2;
    *p3 = a3;
}

/* The nine tap gradients of channels c..c+3 of a 3x3 depthwise layer: g[9 t + tap] = sum delta_t
 * (x_t - zp) over the positions whose tap falls inside the image, t = 0..3. dq holds the four delta
 * maps interleaved, per position the int16 (d0, d2, d1, d3), so one LDRD gives (d0, d2) and
 * (d1, d3); one word load gives the four channels' inputs (in points at channel c), two SXTAB16
 * onto (-zp, -zp) make (x0 - zp, x2 - zp) and (x1 - zp, x3 - zp) (|x - zp| <= 255 fits int16), and
 * SMLABB / SMLATT take the four products. The int32 sums go to int64 after every row: at most
 * TL_UPD_PAIRS (the caller's bound on ow) products of |d (x - zp)| <= 32767 * 255, exact. The same
 * integers as dw3x3_grad's sum delta x - zp sum delta. */
static __attribute__((noinline)) void dw3x3_grad4(const uint32_t *dq, int32_t oh, int32_t ow, const int8_t *in,
                                                  int32_t ih, int32_t iw, int32_t ch, int32_t sh, int32_t sw,
                                                  int32_t pt, int32_t pl, int32_t zp, int64_t *g)
{
    const uint32_t nzp2 = (uint16_t)-zp * 0x00010001u; /* -zp in both halfwords */
    const int32_t step = sw * ch;
    for (int32_t fy = 0; fy < 3; fy++) {
        int32_t ry0, ry1;
        tl_valid_range(oh, ih, sh, pt, fy, &ry0, &ry1);
        for (int32_t fx = 0; fx < 3; fx++) {
            int32_t cx0, cx1;
            tl_valid_range(ow, iw, sw, pl, fx, &cx0, &cx1);
            int64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
            for (int32_t oy = ry0; oy < ry1; oy++) {
                const uint32_t *dp = dq + 2 * (oy * ow + cx0);
                const uint32_t *dend = dq + 2 * (oy * ow + cx1);
                const int8_t *xp = in + ((oy * sh - pt + fy) * iw + cx0 * sw - pl + fx) * ch;
                int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
                if (dp < dend && ((dend - dp) & 2)) { /* an odd number of positions: the first alone */
                    const uint32_t de = dp[0], dodd = dp[1];
                    const uint32_t xv = tl_rd32(xp);
                    const int32_t xe = (int32_t)__sxtab16(nzp2, xv);       /* (x0 - zp, x2 - zp) */
                    const int32_t xo = (int32_t)tl_sxtab16_ror8(nzp2, xv); /* (x1 - zp, x3 - zp) */
                    a0 = __smlabb((int32_t)de, xe, a0);
                    a2 = __smlatt((int32_t)de, xe, a2);
                    a1 = __smlabb((int32_t)dodd, xo, a1);
                    a3 = __smlatt((int32_t)dodd, xo, a3);
                    dp += 2;
                    xp += step;
                }
                if (dp < dend) /* the rest two positions per pass (dw3x3_grad4_pairs) */
                    dw3x3_grad4_pairs(dp, dend, xp, step, nzp2, &a0, &a1, &a2, &a3);
                s0 += a0;
                s1 += a1;
                s2 += a2;
                s3 += a3;
            }
            const int32_t tap = fy * 3 + fx;
            g[tap] = s0;
            g[9 + tap] = s1;
            g[18 + tap] = s2;
            g[27 + tap] = s3;
        }
    }
}

/* tl_lls_update_dsp's channel loop for channels c..c+3 of a 3x3 depthwise layer with a ReLU /
 * ReLU6 / linear activation: their delta maps interleaved in dq (the arena's free gap, 8 bytes per
 * position), one pass of dw3x3_grad4 for the four, then each channel's update as the loop does it
 * (skipped when its delta map is all zero; each channel's weights and bias are its own, so the
 * order of the channels does not matter). Out of line: its frame stays off the deepest chain. */
static __attribute__((noinline)) void dw_group_update(tl_model *m, tl_layer *L, const tl_arena *a, const int8_t *in,
                                                      const int8_t *out, int32_t E, uint32_t prefix, int32_t n_w,
                                                      int32_t c, uint32_t *dq)
{
    const int32_t oh = L->out_h, ow = L->out_w, oc = L->out_c, p = L->pool;
    const int32_t bh = oh / p, bw = ow / p;
    int64_t acc_b[4];
    int32_t Ec[4], nz[4], any = 0;
    for (int32_t t = 0; t < 4; t++) {
        const int32_t *dt = a->signal + (c + t) * p * p;
        const int32_t rs = tl_upd_channel_shift(dt, p * p);
        Ec[t] = E - rs;
        /* slot of channel t in a position's (d0, d2, d1, d3) */
        int16_t *slot = (int16_t *)(void *)dq + ((t & 1) * 2 + (t >> 1));
        acc_b[t] = delta_clamp4_dsp(dt, p, rs, out + c + t, ow, oc, bh, bw, L->act_min, L->act_max, slot, &nz[t]);
        any |= nz[t];
    }
    if (!any)
        return;
    int64_t g[36];
    dw3x3_grad4(dq, oh, ow, in + c, L->in_h, L->in_w, L->in_c, L->stride_h, L->stride_w, L->pad_top, L->pad_left,
                L->in_zp, g);
    for (int32_t t = 0; t < 4; t++) {
        if (!nz[t])
            continue;
        const tl_upd_row u = tl_upd_channel(m, L, c + t, Ec[t], prefix, NULL);
        const int32_t r_upd = 31 + u.Ec - u.ws;
        if (upd_fast_r(r_upd))
            apply_row_dsp(&u, g + 9 * t, 9, c + t, oc);
        else
            tl_upd_apply_row(&u, g + 9 * t, 9, c + t, oc);
        tl_upd_bias(m, L, c + t, acc_b[t], Ec[t], prefix ^ (uint32_t)(n_w + c + t), NULL);
    }
}

/* Step 1 of tl_train_hidden for one row of one pooling cell: Pc[c * pp] += sum of the bw pixels'
 * channel c - zpb. Four channels per word, summed in int16 lanes by SXTAB16 (bw <= 255). */
static __attribute__((noinline)) void pool_row_dsp(const int8_t *h, int32_t oc, int32_t bw, int32_t zpb, int32_t pp,
                                                   int32_t *Pc)
{
    int32_t c = 0;
    for (; c + 3 < oc; c += 4) {
        uint32_t e = 0, o = 0; /* (c, c+2) and (c+1, c+3) */
        const int8_t *hc = h + c;
        for (int32_t k = 0; k < bw; k++, hc += oc) {
            uint32_t v;
            __builtin_memcpy(&v, hc, 4);
            e = __sxtab16(e, v);
            o = tl_sxtab16_ror8(o, v);
        }
        Pc[c * pp] += (int16_t)e - zpb;
        Pc[(c + 1) * pp] += (int16_t)o - zpb;
        Pc[(c + 2) * pp] += ((int32_t)e >> 16) - zpb;
        Pc[(c + 3) * pp] += ((int32_t)o >> 16) - zpb;
    }
    for (; c < oc; c++) {
        const int8_t *hc = h + c;
        int32_t s = 0;
        for (int32_t k = 0; k < bw; k++, hc += oc)
            s += *hc;
        Pc[c * pp] += s - zpb;
    }
}

/* One pooling cell (bh rows of bw pixels, row stride rstride bytes): Pc[c * pp] = sum of its
 * pixels' channel c - zpc, four channels per word in int16 lanes (bh * bw <= 255: at most
 * 255 * 128 per lane), oc a multiple of four. The same sums as pool_row_dsp's row by row. */
static __attribute__((noinline)) void pool_cell_dsp(const int8_t *h, int32_t oc, int32_t rstride, int32_t bh,
                                                    int32_t bw, int32_t zpc, int32_t pp, int32_t *Pc)
{
    for (int32_t c = 0; c < oc; c += 4) {
        uint32_t e = 0, o = 0; /* (c, c+2) and (c+1, c+3) */
        const int8_t *hr = h + c;
        for (int32_t y = 0; y < bh; y++, hr += rstride) {
            const int8_t *hc = hr;
            for (int32_t k = 0; k < bw; k++, hc += oc) {
                uint32_t v;
                __builtin_memcpy(&v, hc, 4);
                e = __sxtab16(e, v);
                o = tl_sxtab16_ror8(o, v);
            }
        }
        Pc[c * pp] = (int16_t)e - zpc;
        Pc[(c + 1) * pp] = (int16_t)o - zpc;
        Pc[(c + 2) * pp] = ((int32_t)e >> 16) - zpc;
        Pc[(c + 3) * pp] = ((int32_t)o >> 16) - zpc;
    }
}

/* tl_lls_pool_ref with the rows of a cell summed four channels per word (bw <= 255). */
void tl_lls_pool_dsp(const tl_layer *L, const int8_t *out, int32_t *P)
{
    const int32_t p = L->pool, oh = L->out_h, ow = L->out_w, oc = L->out_c;
    const int32_t bh = oh / p, bw = ow / p, T = oc * p * p;
    if (bw > 255) { /* int16 lanes: at most 255 * 128 */
        tl_lls_pool_ref(L, out, P);
        return;
    }
    if (bh * bw <= 255 && (oc & 3) == 0) { /* a whole cell in the int16 lanes: one sum per cell */
        for (int32_t cy = 0; cy < p; cy++)
            for (int32_t cx = 0; cx < p; cx++)
                pool_cell_dsp(out + (cy * bh * ow + cx * bw) * oc, oc, ow * oc, bh, bw, bh * bw * L->out_zp,
                              p * p, P + cy * p + cx);
        return;
    }
    for (int32_t t = 0; t < T; t++)
        P[t] = 0;
    for (int32_t oy = 0; oy < oh; oy++) {
        const int32_t cy = oy / bh;
        for (int32_t cx = 0; cx < p; cx++)
            pool_row_dsp(out + (oy * ow + cx * bw) * oc, oc, bw, bw * L->out_zp, p * p, P + cy * p + cx);
    }
}

/* ---------------------------------------------------------------- small convolutions */
#define TL_UPD_ROW_KW 8 /* filter widths and input channels conv_row_grad takes (its arrays) */
#define TL_UPD_ROW_IC 8

/* Channel c of a (non-depthwise, non-1x1) convolution with few input channels (the first layer):
 * the kw taps of a filter row are kw * ic consecutive input bytes of each position and kw * ic
 * consecutive weights, so over the output columns valid for every fx ([mx0, mx1)) one
 * tap_corr_dsp of kw * ic channels replaces kw of ic channels (one walk of the delta map per two
 * groups of four instead of one per tap); the edge columns valid for only some fx go tap by tap.
 * The column ranges of a tap are disjoint and cover its valid columns, so each gradient is the same
 * exact sum, and the row's kw * ic weights take one update. acc holds kw * ic <= TL_UPD_JB. */
static __attribute__((noinline)) void conv_row_grad(const tl_layer *L, const tl_upd_row *u, int32_t c,
                                                    const int16_t *delta, const int8_t *in, int fast_round,
                                                    int64_t *acc)
{
    const int32_t oh = L->out_h, ow = L->out_w, kh = L->k_h, kw = L->k_w, ic = L->in_c, iw = L->in_w;
    const int32_t sh = L->stride_h, sw = L->stride_w, pt = L->pad_top, pl = L->pad_left, zp = L->in_zp;
    const int32_t nk = kw * ic;
    int32_t cx0[TL_UPD_ROW_KW], cx1[TL_UPD_ROW_KW];
    int32_t mx0 = 0, mx1 = ow;
    for (int32_t fx = 0; fx < kw; fx++) {
        tl_valid_range(ow, iw, sw, pl, fx, &cx0[fx], &cx1[fx]);
        mx0 = TL_MAX(mx0, cx0[fx]);
        mx1 = TL_MIN(mx1, cx1[fx]);
    }
    mx1 = TL_MAX(mx1, mx0);
    for (int32_t fy = 0; fy < kh; fy++) {
        int32_t oy0, oy1;
        tl_valid_range(oh, L->in_h, sh, pt, fy, &oy0, &oy1);
        if (mx1 > mx0)
            tap_corr_dsp(delta, ow, in, iw, ic, sh, sw, oy0, oy1, mx0, mx1, fy - pt, -pl, 0, nk, zp, acc);
        else
            for (int32_t j = 0; j < nk; j++)
                acc[j] = 0;
        for (int32_t fx = 0; fx < kw; fx++) {
            /* the columns of tap fx left and right of [mx0, mx1) */
            const int32_t r0[2] = {cx0[fx], TL_MAX(cx0[fx], mx1)};
            const int32_t r1[2] = {TL_MIN(cx1[fx], mx0), cx1[fx]};
            for (int32_t e = 0; e < 2; e++) {
                if (r1[e] <= r0[e])
                    continue;
                int64_t g[TL_UPD_ROW_IC];
                tap_corr_dsp(delta, ow, in, iw, ic, sh, sw, oy0, oy1, r0[e], r1[e], fy - pt, fx - pl, 0, ic, zp, g);
                for (int32_t j = 0; j < ic; j++)
                    acc[fx * ic + j] += g[j];
            }
        }
        const int32_t idx = (c * kh + fy) * nk;
        if (fast_round)
            apply_row_dsp(u, acc, nk, idx, 1);
        else
            tl_upd_apply_row(u, acc, nk, idx, 1);
    }
}

/* ---------------------------------------------------------------- one layer */
void tl_lls_update_dsp(tl_model *m, int32_t i, const tl_arena *a, const int8_t *in, const int8_t *out, int32_t E,
                       int classifier, int64_t *dw_preview, int64_t *db_preview)
{
    tl_layer *L = &m->layers[i];
    const int32_t *d = a->signal;
    int16_t *delta = a->delta;
    const int32_t oh = L->out_h, ow = L->out_w, oc = L->out_c;
    const int32_t p = classifier ? 1 : L->pool;
    const int32_t bh = oh / p, bw = ow / p;
    const int32_t n_w = (int32_t)tl_layer_n_weights(L);
    const uint32_t prefix = tl_upd_prefix(m->cfg.seed, m->step, (uint32_t)i);
    const int leaky = L->act == TL_ACT_LEAKY;
    int64_t acc[TL_UPD_JB];
    /* the small 1x1 layers' input widened once for corr_wide_dsp, where it fits */
    if (!dw_preview && tl_layer_is_pointwise(L) && oh * ow <= TL_UPD_SMALL && L->in_c <= TL_UPD_SMALL_IC)
        (void)corr_wide_make(a, oh * ow, in, out, L->in_c);
    /* 3x3 depthwise layers four channels at a time, where the interleaved delta maps fit the gap */
    uint32_t *dq = NULL;
    if (L->kind == TL_LAYER_DWCONV && L->k_h == 3 && L->k_w == 3 && ow <= TL_UPD_PAIRS && !classifier && !leaky &&
        !dw_preview && !db_preview) {
        int32_t room;
        dq = (uint32_t *)arena_gap(a, oh * ow, in, out, &room);
        if (room < 2 * oh * ow)
            dq = NULL;
    }
    for (int32_t c = 0; c < oc; c++) {
        if (dq && c + 3 < oc) {
            dw_group_update(m, L, a, in, out, E, prefix, n_w, c, dq);
            c += 3;
            continue;
        }
        /* as tl_lls_update_ref: the channel's own block exponent, its delta map and bias sum */
        const int32_t t0 = classifier ? c : c * p * p, nt = classifier ? 1 : p * p;
        const int32_t rs = tl_upd_channel_shift(d + t0, nt);
        const int32_t Ec = E - rs;
        int64_t acc_b;
        int32_t nonzero = 0;
        if (!classifier && !leaky)
            acc_b = delta_clamp_dsp(d + t0, p, rs, out + c, ow, oc, bh, bw, L->act_min, L->act_max, delta, &nonzero);
        else
            acc_b = tl_upd_delta_map(L, d + t0, rs, out + c, classifier, delta, &nonzero);
        if (!nonzero && !dw_preview)
            continue;
        const tl_upd_row u = tl_upd_channel(m, L, c, Ec, prefix, dw_preview);
        const int32_t kh = L->k_h, kw = L->k_w;
        if (L->kind == TL_LAYER_FC) {
            tl_upd_fc(L, &u, c, delta[0], in);
            tl_upd_bias(m, L, c, acc_b, Ec, prefix ^ (uint32_t)(n_w + c), db_preview);
            continue;
        }
        const int dw_kind = L->kind == TL_LAYER_DWCONV;
        const int32_t ic = L->in_c, iw = L->in_w, ih = L->in_h;
        const int32_t n_ci = dw_kind ? 1 : ic;
        /* a 1x1 layer's positions are consecutive pixels of both maps: one long row (its int32
         * delta sum stays exact up to 2^16 positions) instead of oh short ones */
        const int flat = tl_layer_is_pointwise(L) && oh * ow <= 4096;
        const int32_t r_upd = 31 + u.Ec - u.ws;
        const int fast_round = !dw_preview && upd_fast_r(r_upd);
        if (flat && oh * ow <= TL_UPD_SMALL && ic <= TL_UPD_SMALL_IC && fast_round) {
            if (!corr_wide_dsp(delta, oh * ow, a, in, out, ic, L->in_zp, &u, c * ic))
                corr_apply_dsp(delta, oh * ow, in, ic, L->in_zp, &u, c * ic);
        } else if (dw_kind && kh == 3 && kw == 3 && ow <= TL_UPD_PAIRS) {
            int64_t g[9], gs[9];
            dw3x3_grad(delta, oh, ow, in + c, ih, iw, ic, L->stride_h, L->stride_w, L->pad_top, L->pad_left, g, gs);
            for (int32_t t = 0; t < 9; t++)
                g[t] -= (int64_t)L->in_zp * gs[t];
            if (fast_round)
                apply_row_dsp(&u, g, 9, c, oc);
            else
                tl_upd_apply_row(&u, g, 9, c, oc);
        } else if (!dw_kind && !flat && kw <= TL_UPD_ROW_KW && ic <= TL_UPD_ROW_IC) {
            conv_row_grad(L, &u, c, delta, in, fast_round, acc);
        } else {
            for (int32_t fy = 0; fy < kh; fy++) {
                int32_t oy0, oy1;
                tl_valid_range(oh, ih, L->stride_h, L->pad_top, fy, &oy0, &oy1);
                for (int32_t fx = 0; fx < kw; fx++) {
                    int32_t ox0, ox1;
                    tl_valid_range(ow, iw, L->stride_w, L->pad_left, fx, &ox0, &ox1);
                    for (int32_t j0 = 0; j0 < n_ci; j0 += TL_UPD_JB) {
                        const int32_t nj = TL_MIN(TL_UPD_JB, n_ci - j0);
                        if (flat)
                            tap_corr_dsp(delta, oh * ow, in, oh * ow, ic, 1, 1, 0, 1, 0, oh * ow, 0, 0, j0, nj,
                                         L->in_zp, acc);
                        else
                            tap_corr_dsp(delta, ow, in, iw, ic, L->stride_h, L->stride_w, oy0, oy1, ox0, ox1,
                                         fy - L->pad_top, fx - L->pad_left, dw_kind ? c : j0, nj, L->in_zp, acc);
                        if (dw_kind)
                            tl_upd_apply_row(&u, acc, 1, (fy * kw + fx) * oc + c, 1);
                        else if (fast_round)
                            apply_row_dsp(&u, acc, nj, ((c * kh + fy) * kw + fx) * ic + j0, 1);
                        else
                            tl_upd_apply_row(&u, acc, nj, ((c * kh + fy) * kw + fx) * ic + j0, 1);
                    }
                }
            }
        }
        tl_upd_bias(m, L, c, acc_b, Ec, prefix ^ (uint32_t)(n_w + c), db_preview);
    }
}

#endif /* TL_HAVE_DSP */
