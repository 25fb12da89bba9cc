/* LLS training in integers: the local head of a layer (pool -> L2 normalise -> project on a fixed
 * basis -> softmax -> error -> learning signal) and the layer's weight update, plus softmax
 * cross-entropy for the last layer. See ../shared/notes/lls.md for the float rule.
 *
 * Number formats along the way (h = layer output, zp its zero point):
 *   P_t   int32   pooled sums of (h - zp) over each pooling cell (scale-free: normalisation
 *                 cancels the activation scale and the cell size)
 *   n     uint32  floor(||P||), integer square root of an int64 sum of squares
 *   a_c   Q16     projection h^ . b_c = sum_t P_t b_c[t] / n      (basis in Q15)
 *   z_c   Q16     logits a_c / tau (times the LLS-M / MxM modulation)
 *   p_c   Q24     softmax; e_c = p_c - onehot in Q24; w_c = dL/da_c in Q24
 *   g_t   Q24     dL/dh^_t = sum_c w_c b_c[t]
 *   u_t   Q24     g_t - (g . h^) h^_t             (back through the normalisation, times n)
 *   d_t   int32   u_t / n as a block-floating-point vector: d_t * 2^-E = u_t / n, |d_t| < 2^30;
 *                 each output channel takes its slice to int16 with its own exponent
 * The real gradient of the local loss w.r.t. the layer's real output is d_t 2^-E / s_out, and
 * the per-channel factors s_in / (s_out s_w[c]) (host: Layer.update_reals) turn it into weight
 * LSBs. Updates are scaled by those factors and the layer's learning rate, then rounded
 * stochastically with a counter-based random stream (unbiased, so sub-LSB progress survives in
 * expectation) and saturated to [-127, 127]. */
#include "tl_config.h"
#include "tl_train.h"
#include "tl_x86.h"

/* ---------------------------------------------------------------- basis */
#define TL_K50 34178263779ULL   /* round(50 / (2 pi) * 2^32): 50 rad per element, in Q32 turns */
#define TL_K462 315807157316ULL /* round(462 / (2 pi) * 2^32) */

/* f_c = linspace(50, 512, C)[c] rad/element as a Q32 phase increment (mod one turn). */
static uint32_t basis_increment(int32_t c, int32_t classes)
{
    uint64_t inc = TL_K50;
    if (classes > 1)
        inc += (TL_K462 * (uint64_t)c) / (uint64_t)(classes - 1);
    return (uint32_t)inc;
}

static int32_t basis_value(int32_t basis, uint32_t seed, uint32_t inc, int32_t c, int32_t t)
{
    if (basis == TL_BASIS_RANDOM)
        return (tl_rand4(seed, 0x6261u, (uint32_t)c, (uint32_t)t) & 1u) ? TL_BASIS_ONE : -TL_BASIS_ONE;
    const uint32_t phase = inc * (uint32_t)t; /* exact modular arithmetic in turns */
    if (basis == TL_BASIS_SINE)
        return tl_sin_turns_q15(phase);
    if (phase == 0u || phase == 0x80000000u)
        return 0;
    return phase < 0x80000000u ? TL_BASIS_ONE : -TL_BASIS_ONE;
}

int32_t tl_basis_q15(int32_t basis, uint32_t basis_seed, int32_t c, int32_t classes, int32_t t)
{
    if (classes < 1 || c < 0 || c >= classes || t < 0)
        return 0;
    return basis_value(basis, basis_seed, basis_increment(c, classes), c, t);
}

/* g_t / 2^15 rounded: sum_c w_c b_c[t] (Q24 x Q15) back to Q24. ph[c] holds inc[c] * t for the
 * square basis (advanced here, so a pass over t = 0, 1, ... needs no multiply): +-1 exactly
 * 2^15, so g is a multiple of 2^15 and the shift is exact, sum_c +-w_c. */
static inline int64_t g_square(const uint32_t *inc, const int32_t *w, int32_t C, uint32_t *ph)
{
    int64_t g = 0;
    for (int32_t c = 0; c < C; c++) {
        const uint32_t v = ph[c];
        ph[c] = v + inc[c];
        const int32_t wc = (v & 0x80000000u) ? -w[c] : w[c];
        g += (v << 1) ? wc : 0;
    }
    return g;
}

static int64_t g_at(int32_t basis, uint32_t seed, const uint32_t *inc, const int32_t *w, int32_t C, int32_t t,
                    uint32_t *ph)
{
    if (basis == TL_BASIS_SQUARE)
        return g_square(inc, w, C, ph);
    int64_t g = 0;
    for (int32_t c = 0; c < C; c++)
        g += (int64_t)w[c] * basis_value(basis, seed, inc[c], c, t);
    return tl_shr_round(g, 15);
}

/* g_at in the passes over T: the Arm build inlines the square basis (the call costs more than
 * the sum for a few classes) */
#if TL_HAVE_DSP
#define TL_G_AT(basis, seed, inc, w, C, t, ph) \
    ((basis) == TL_BASIS_SQUARE ? g_square(inc, w, C, ph) : g_at(basis, seed, inc, w, C, t, ph))
#else
#define TL_G_AT g_at
#endif

/* tl_div_round(a, n) for a divisor n > 0 used many times: the quotient from a 64 x 64 high
 * product with r = floor((2^64 - 1) / n), then corrected (the estimate is at most 2 low). */
typedef struct {
    uint64_t n, r;
} tl_divisor;

static tl_divisor divisor_of(uint64_t n)
{
    tl_divisor d;
    d.n = n;
    d.r = UINT64_MAX / n;
    return d;
}

static uint64_t mulhi64(uint64_t a, uint64_t b)
{
#if TL_HAVE_DSP
    /* the high half of the 128-bit product with UMULL and three UMAAL (x + y*z + w never
     * overflows 64 bits): a0 b0 = x1:x0, a1 b0 + x1 = y1:y0, a0 b1 + y0 = z1:z0, then
     * a1 b1 + y1 + z1 is the high half */
    uint32_t x0, x1, y0, y1 = 0, z0, z1 = 0;
    const uint32_t a0 = (uint32_t)a, a1 = (uint32_t)(a >> 32), b0 = (uint32_t)b, b1 = (uint32_t)(b >> 32);
    __asm__("umull %0, %1, %2, %3" : "=&r"(x0), "=&r"(x1) : "r"(a0), "r"(b0));
    (void)x0;
    y0 = x1;
    __asm__("umaal %0, %1, %2, %3" : "+&r"(y0), "+&r"(y1) : "r"(a1), "r"(b0));
    z0 = y0;
    __asm__("umaal %0, %1, %2, %3" : "+&r"(z0), "+&r"(z1) : "r"(a0), "r"(b1));
    (void)z0;
    __asm__("umaal %0, %1, %2, %3" : "+&r"(y1), "+&r"(z1) : "r"(a1), "r"(b1));
    return ((uint64_t)z1 << 32) | y1;
#elif defined(__SIZEOF_INT128__) && defined(__GNUC__)
    __extension__ typedef unsigned __int128 u128; /* one MUL where the target has it (x86-64, AArch64) */
    return (uint64_t)(((u128)a * b) >> 64);
#else
    const uint64_t a0 = (uint32_t)a, a1 = a >> 32, b0 = (uint32_t)b, b1 = b >> 32;
    const uint64_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
    const uint64_t mid = (p00 >> 32) + (uint32_t)p01 + (uint32_t)p10;
    return p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32);
#endif
}

static int64_t div_round_by(int64_t a, const tl_divisor *d)
{
    /* as tl_div_round: (|a| + n/2) / n with the sign of a; |a| + n/2 < 2^63 at every use */
    const uint64_t num = (a < 0 ? (uint64_t)0 - (uint64_t)a : (uint64_t)a) + (d->n >> 1);
    uint64_t q = mulhi64(num, d->r);
    uint64_t rem = num - q * d->n;
#if TL_HOST_WIDE
    /* the estimate is at most 2 low: two branch-free steps (the loop's branch mispredicts often) */
    const uint64_t c1 = rem >= d->n;
    q += c1;
    rem -= c1 ? d->n : 0;
    q += rem >= d->n;
#else
    while (rem >= d->n) {
        rem -= d->n;
        q++;
    }
#endif
    return a < 0 ? -(int64_t)q : (int64_t)q;
}

/* ---------------------------------------------------------------- softmax */
/* z (Q16) -> p (Q24); returns the argmax (first on ties); loss (Q16) for label >= 0. */
static int32_t softmax(const int32_t *z, int32_t classes, int32_t label, int32_t *p, int32_t *loss)
{
    int32_t best = 0;
    for (int32_t c = 1; c < classes; c++)
        if (z[c] > z[best])
            best = c;
    const int32_t zmax = z[best];
    int64_t sum = 0;
    for (int32_t c = 0; c < classes; c++) {
        p[c] = tl_exp_q16_to_q24(z[c] - zmax);
        sum += p[c];
    }
    /* -ln p_y = (zmax - z_y) + ln(sum exp(z - zmax)), exact even when p_y underflows */
    if (label >= 0)
        *loss = (zmax - z[label]) + tl_ln_ratio_q16((uint64_t)sum, (uint64_t)TL_Q24_ONE);
    for (int32_t c = 0; c < classes; c++)
        p[c] = (int32_t)tl_div_round((int64_t)p[c] << 24, sum);
    return best;
}

/* ---------------------------------------------------------------- update scaling */
static int bit_length(uint64_t v)
{
    return tl_bit_length64(v);
}

/* acc * mult * 2^(shift - 31 - E) as an int64, rounded stochastically with the random word rnd
 * (or to nearest); with q16 != NULL also the unrounded value in Q16. */
static int64_t scale_update(int64_t acc, int32_t mult, int32_t shift, int32_t E, int32_t rounding,
                            uint32_t rnd, int64_t *q16)
{
    if (acc == 0 || mult == 0) {
        if (q16)
            *q16 = 0;
        return 0;
    }
    const uint64_t mag = acc < 0 ? (uint64_t)(-acc) : (uint64_t)acc;
    const int k = TL_MAX(0, bit_length(mag) - 31); /* keep |acc| < 2^31 so acc*mult fits */
    int64_t prod = tl_shr_round(acc, k) * (int64_t)mult;
    int32_t r = 31 + E - shift - k;
    if (q16)
        *q16 = r >= 16 ? tl_shr_round(prod, TL_MIN(r - 16, 62)) : prod * ((int64_t)1 << TL_MIN(16 - r, 20));
    if (r <= 0) {
        const int64_t lim = (int64_t)1 << 40;
        const int64_t v = r < -20 ? (prod < 0 ? -lim : lim) : prod * ((int64_t)1 << -r);
        return TL_CLAMP(v, -lim, lim);
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

/* The product of the layer's learning rate and a per-channel factor, both quantized multipliers. */
static void combine(int32_t m1, int32_t s1, int32_t m2, int32_t s2, int32_t *m, int32_t *s)
{
    *m = (int32_t)tl_shr_round((int64_t)m1 * m2, 31);
    *s = s1 + s2;
}

/* ---------------------------------------------------------------- the weight update */
/* The rounding stream of layer `layer` at step `step`: tl_rand4(seed, step, layer, idx) is
 * tl_mix32(prefix ^ idx), so the three leading mixes are computed once per layer, not per weight. */
static uint32_t stream_prefix(uint32_t seed, uint32_t step, uint32_t layer)
{
    uint32_t h = tl_mix32(seed ^ 0x9E3779B9u);
    h = tl_mix32(h ^ step);
    return tl_mix32(h ^ (layer * 0x9E3779B9u));
}

/* Everything one output channel's weight update needs besides the gradient itself. */
typedef struct {
    int8_t *weights;        /* the layer's weights */
    int64_t *dw_preview;    /* preview mode: the unrounded update goes here, weights untouched */
    int32_t wm, ws, Ec;     /* combined scale (lr x per-channel factor) and block exponent */
    int32_t rounding;
    uint32_t prefix;        /* stream_prefix of the layer */
} upd_row;

/* One weight: scale_update and the saturating subtraction (or the preview). */
static void apply_one(const upd_row *u, int64_t acc, int32_t idx)
{
    int64_t q16;
    const int64_t dw = scale_update(acc, u->wm, u->ws, u->Ec, u->rounding, tl_mix32(u->prefix ^ (uint32_t)idx),
                                    u->dw_preview ? &q16 : NULL);
    if (u->dw_preview)
        u->dw_preview[idx] = -q16;
    else
        u->weights[idx] = (int8_t)TL_CLAMP((int64_t)u->weights[idx] - dw, -127, 127);
}

/* n weights at idx0, idx0 + stride, ... with gradients acc[0..n). For |acc| < 2^31 and a rounding
 * shift r in [1, 62] scale_update reduces to prod = acc * mult; floor(prod / 2^r) plus the rounding
 * bit taken from the r fraction bits of prod, which is what this loop computes without branches;
 * every other case goes through scale_update itself. */
static void apply_row(const upd_row *u, const int64_t *acc, int32_t n, int32_t idx0, int32_t stride)
{
    const int32_t r = 31 + u->Ec - u->ws;
    if (u->dw_preview || r < 1 || r > 62) {
        for (int32_t k = 0; k < n; k++)
            apply_one(u, acc[k], idx0 + k * stride);
        return;
    }
    const int64_t mult = u->wm;
    const int nearest = u->rounding == TL_ROUND_NEAREST;
    for (int32_t k = 0; k < n; k++) {
        const int64_t a = acc[k];
        const int32_t idx = idx0 + k * stride;
        if ((uint64_t)(a + INT32_MAX) >= (uint64_t)UINT32_MAX) { /* |a| >= 2^31 */
            apply_one(u, a, idx);
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

#if TL_HAVE_DSP
/* apply_row(u, acc, n, idx0, stride) for the usual rounding shifts r = 31 + Ec - ws in [32, 94]:
 * with |a| < 2^31 the product a * mult is one SMULL, floor(prod / 2^r) the high word shifted by
 * s = r - 32, and the 32 fraction bits under it the two words funnel-shifted. The decrement is
 * saturated to 10 bits first: any |dw| >= 255 clamps a weight in [-127, 127] to the same bound. */
/* The constants of the loop below, as locals (the int8 weight stores may alias *u). */
typedef struct {
    int32_t s, mult;
    uint32_t prefix;
    int8_t *wt;
} upd_fast;

/* The rounding shifts r = 31 + Ec - ws the loops below take: r <= 63 ("small": floor and fraction
 * from both words of the product) or r in [64, TL_UPD_R_MAX] ("big": the high word alone; then
 * |prod| < 2^62 makes the floor 0 or -1). scale_update shifts prod right by r - 62 first when
 * r > 62, which leaves the same floor and the same 32 fraction bits below bit r. */
#define TL_UPD_R_MAX 94

static inline upd_fast upd_fast_of(const upd_row *u)
{
    upd_fast f;
    const int32_t r = 31 + u->Ec - u->ws;
    f.s = r <= 63 ? r - 32 : r - 64;
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
    uint32_t lo;
    int32_t hi;
    __asm__("smull %0, %1, %2, %3" : "=&r"(lo), "=&r"(hi) : "r"(a), "r"(f->mult)); /* a * mult */
    const uint32_t top = big ? (uint32_t)(hi >> f->s) : (lo >> f->s) | ((uint32_t)hi << 1 << (31 - f->s));
    const int32_t fl = big ? hi >> 31 : hi >> f->s;
    const uint32_t rnd = nearest ? 0x7FFFFFFFu : tl_mix32(f->prefix ^ (uint32_t)idx);
    const int32_t v = __ssat((int32_t)f->wt[idx] - (__ssat(fl, 10) + (rnd < top ? 1 : 0)), 8);
    f->wt[idx] = (int8_t)(v < -127 ? -127 : v);
}

/* always inlined: each call site below is one specialised copy (constant nearest, big) */
static inline __attribute__((always_inline)) void apply_row_dsp_loop(const upd_row *u, const int64_t *acc, int32_t n,
                                                                     int32_t idx0, int32_t stride, const int nearest,
                                                                     const int big)
{
    const upd_fast f = upd_fast_of(u);
    for (int32_t k = 0, idx = idx0; k < n; k++, idx += stride, acc++) {
        const int64_t a = *acc;
        const int32_t a32 = (int32_t)a;
        if ((int32_t)(a >> 32) != (a32 >> 31) || a32 == INT32_MIN) { /* |a| >= 2^31: the general path */
            apply_one(u, a, idx);
            continue;
        }
        upd_one_fast(&f, a32, idx, nearest, big);
    }
}

/* kept out of update_layer: inlined there, its loop invariants spill */
static __attribute__((noinline)) void apply_row_dsp(const upd_row *u, const int64_t *acc, int32_t n, int32_t idx0,
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
#endif

#define TL_UPD_JB 64   /* input channels per gradient chunk (stack: 64 int32 + 64 int64) */
#define TL_UPD_FLUSH 256 /* products per int32 partial sum: 256 * 32767 * 128 < 2^31 */


#if !TL_HAVE_DSP
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

#else
static inline uint32_t rd32(const void *p)
{
    uint32_t v;
    __builtin_memcpy(&v, p, 4);
    return v;
}

/* PKHBT a, b, LSL #16 (low halves of a and b), PKHTB b, a, ASR #16 (high halves of a and b):
 * gcc has no intrinsic for them. */
static inline int32_t pk_bt(int32_t a, int32_t b)
{
    int32_t r;
    __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(r) : "r"(a), "r"(b));
    return r;
}

static inline int32_t pk_tb(int32_t a, int32_t b)
{
    int32_t r;
    __asm__("pkhtb %0, %2, %1, asr #16" : "=r"(r) : "r"(a), "r"(b));
    return r;
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
                const int32_t dd = (int32_t)rd32(drow + 2 * k);
                if (dd == 0)
                    continue;
                a0 = __smlad(dd, pk_bt(xp[0], xp[step]), a0);
                if (nt > 1)
                    a1 = __smlad(dd, pk_bt(xp[1], xp[step + 1]), a1);
                if (nt > 2)
                    a2 = __smlad(dd, pk_bt(xp[2], xp[step + 2]), a2);
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
            r = __smlad((int32_t)rd32(drow + 2 * k), 0x00010001, r);
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
                    const int32_t dd = (int32_t)rd32(drow + 2 * k);
                    if (dd == 0)
                        continue;
                    /* bytes [x0_0 x0_1 x1_0 x1_1] and [x0_2 x0_3 x1_2 x1_3]: SXTB16 of these gives the
                     * per-channel position pairs directly (two packs instead of four) */
                    const uint32_t x0 = rd32(xp), x1 = rd32(xp + step);
                    const uint32_t lo = (uint32_t)pk_bt((int32_t)x0, (int32_t)x1);
                    const uint32_t hi = (uint32_t)pk_tb((int32_t)x0, (int32_t)x1);
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
#endif

#if TL_HAVE_DSP
static void valid_range(int32_t n_out, int32_t n_in, int32_t stride, int32_t pad, int32_t f, int32_t *o0, int32_t *o1);

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
        valid_range(ow, iw, sw, pl, fx, &cx0[fx], &cx1[fx]);
    /* the columns valid for every fx */
    const int32_t mx0 = TL_MAX(TL_MAX(cx0[0], cx0[1]), cx0[2]);
    const int32_t mx1 = TL_MAX(mx0, TL_MIN(TL_MIN(cx1[0], cx1[1]), cx1[2]));
    const int32_t npair = (mx1 - mx0) / 2, mend = mx0 + 2 * npair; /* pairs cover [mx0, mend) */
    for (int32_t fy = 0; fy < 3; fy++) {
        int32_t ry0, ry1;
        valid_range(oh, ih, sh, pt, fy, &ry0, &ry1);
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
                const int32_t dd = (int32_t)rd32(drow + mx0 + 2 * k);
                if (dd == 0)
                    continue;
                r = __smlad(dd, 0x00010001, r);
                const int8_t *xq = xp + step;
                a0 = __smlad(dd, pk_bt(xp[0], xq[0]), a0);
                a1 = __smlad(dd, pk_bt(xp[ch], xq[ch]), a1);
                a2 = __smlad(dd, pk_bt(xp[2 * ch], xq[2 * ch]), a2);
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
#endif

#if TL_HAVE_DSP
#define TL_UPD_SMALL 256 /* positions of a map whose 1x1 gradients fit int32: 256 * 32767 * 255 < 2^31 */
#define TL_UPD_SMALL_IC 258 /* input channels for which (TL_UPD_SMALL - 2) ic, the largest pair offset, fits 16 bits */

/* A 1x1 layer with at most TL_UPD_SMALL positions, one output channel: every weight's gradient
 * sum delta (x - zp) fits int32 (so no int64 partial sums, no range checks), and is applied as soon
 * as its group of four input channels is done. The correlation is tap_corr_dsp's (two positions
 * per SMLAD); an odd last position is the pair (delta, 0). */
static inline __attribute__((always_inline)) void corr_apply_loop(const int16_t *delta, int32_t np, const int8_t *in,
                                                                  int32_t ic, int32_t zp, const upd_row *u,
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
        const int32_t dd = (int32_t)rd32(delta + 2 * k);
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
            const uint32_t x0 = rd32(xp), x1 = rd32(xp + ic);
            const uint32_t lo = (uint32_t)pk_bt((int32_t)x0, (int32_t)x1);
            const uint32_t hi = (uint32_t)pk_tb((int32_t)x0, (int32_t)x1);
            a0 = __smlad(dd, (int32_t)__sxtb16(lo), a0);
            a1 = __smlad(dd, tl_sxtb16_ror8(lo), a1);
            a2 = __smlad(dd, (int32_t)__sxtb16(hi), a2);
            a3 = __smlad(dd, tl_sxtb16_ror8(hi), a3);
        }
        if (dlast) {
            const uint32_t x0 = rd32(in + j + 2 * npair * ic);
            const uint32_t lo = (uint32_t)pk_bt((int32_t)x0, (int32_t)x0);
            const uint32_t hi = (uint32_t)pk_tb((int32_t)x0, (int32_t)x0);
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
                                                     int32_t zp, const upd_row *u, int32_t idx0)
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
#endif

#if TL_HAVE_DSP
/* update_layer's delta map of one output channel of a hidden layer whose f' is 0 or 1 (ReLU, ReLU6,
 * no activation), one pooling cell at a time, as its portable loop: d the channel's p*p signals,
 * out its outputs (stride oc). Kept out of update_layer for its registers; the rounding shift of
 * the 30-bit signals is done in 32 bits (|d| < 2^30) and f' as a sign mask. Returns
 * the bias gradient sum; *nonzero as the portable loop. */
static __attribute__((noinline)) int64_t delta_clamp_dsp(const int32_t *d, int32_t p, int32_t rs, const int8_t *out,
                                                         int32_t ow, int32_t oc, int32_t bh, int32_t bw, int32_t lo,
                                                         int32_t hi, int16_t *delta, int32_t *nonzero)
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
            const int32_t v = v0 & ~(((h - lo1) | (hi1 - h)) >> 31);
            delta[t] = (int16_t)v;
            sum += v;
            nz |= v;
        }
        *nonzero = nz;
        return sum;
    }
    for (int32_t cy = 0; cy < p; cy++) {
        for (int32_t cx = 0; cx < p; cx++) {
            const int32_t dv = d[cy * p + cx];
            int32_t v0 = dv >= 0 ? (dv + half) >> rs : -((-dv + half) >> rs); /* tl_shr_round */
            v0 = TL_CLAMP(v0, -32767, 32767);
            int32_t open = bh * bw; /* minus one per closed position below */
            for (int32_t oy = cy * bh; oy < (cy + 1) * bh; oy++) {
                const int8_t *h = out + (oy * ow + cx * bw) * oc;
                int16_t *drow = delta + oy * ow + cx * bw;
                for (int32_t k = 0; k < bw; k++, h += oc) {
                    /* closed (h <= lo or h >= hi) iff (h - lo1) | (hi1 - h) is negative */
                    const int32_t closed = (((int32_t)*h - lo1) | (hi1 - (int32_t)*h)) >> 31;
                    drow[k] = (int16_t)(v0 & ~closed);
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
#endif

/* The output positions o in [0, n_out) whose input coordinate o*stride - pad + f lies in [0, n_in). */
static void valid_range(int32_t n_out, int32_t n_in, int32_t stride, int32_t pad, int32_t f, int32_t *o0, int32_t *o1)
{
    const int32_t off = f - pad; /* input = o * stride + off */
    int32_t lo = off >= 0 ? 0 : (-off + stride - 1) / stride;
    int32_t hi = n_in - 1 - off < 0 ? 0 : (n_in - 1 - off) / stride + 1;
    *o0 = TL_MIN(lo, n_out);
    *o1 = TL_MAX(*o0, TL_MIN(hi, n_out));
}

/* The right shift that takes a channel's slice of the 30-bit signal to 15 bits. */
static int32_t channel_shift(const int32_t *d, int32_t n)
{
    uint32_t cmax = 0;
    for (int32_t t = 0; t < n; t++)
        cmax |= (uint32_t)(d[t] < 0 ? -d[t] : d[t]);
    return TL_MAX(0, tl_bit_length32(cmax) - 15);
}

/* A cell's learning signal in channel c's int16 delta scale: d rounded right by the channel's rs. */
static int32_t cell_signal(int32_t d, int32_t rs)
{
    return (int32_t)TL_CLAMP(tl_shr_round(d, rs), -32767, 32767);
}

/* Everything but the gradient that channel c's weight update needs (apply_row / apply_one). */
static upd_row channel_update(const tl_model *m, const tl_layer *L, int32_t c, int32_t Ec, uint32_t prefix,
                              int64_t *dw_preview)
{
    upd_row u;
    u.weights = L->weights;
    u.dw_preview = dw_preview;
    u.Ec = Ec;
    u.rounding = m->cfg.rounding;
    u.prefix = prefix;
    combine(L->upd_mult[c], L->upd_shift[c], L->lr_mult, L->lr_shift, &u.wm, &u.ws);
    return u;
}

/* Channel c's bias update (or its preview) from acc_b = sum of the channel's deltas. */
static void update_bias(const tl_model *m, tl_layer *L, int32_t c, int64_t acc_b, int32_t Ec, uint32_t rnd_key,
                        int64_t *db_preview)
{
    int32_t bm, bs;
    int64_t q16;
    combine(L->bupd_mult[c], L->bupd_shift[c], L->lr_mult, L->lr_shift, &bm, &bs);
    const int64_t db = scale_update(acc_b, bm, bs, Ec, m->cfg.rounding, tl_mix32(rnd_key), db_preview ? &q16 : NULL);
    if (db_preview)
        db_preview[c] = -q16;
    else
        L->bias[c] = (int32_t)TL_CLAMP((int64_t)L->bias[c] - db, INT32_MIN, INT32_MAX);
}

#if TL_HOST_WIDE
/* apply_row over n contiguous weights, four per vector through tl_wide_apply where its
 * preconditions hold (no preview, r in [1, 62]), whatever it leaves by apply_row. */
static void apply_row_wide(const upd_row *u, const int64_t *acc, int32_t n, int32_t idx0)
{
    const int32_t r = 31 + u->Ec - u->ws;
    int32_t done = 0;
    if (!u->dw_preview && r >= 1 && r <= 62 && u->wm >= 0)
        done = tl_wide_apply(u->weights, acc, n, idx0, u->wm, r, u->rounding == TL_ROUND_NEAREST, u->prefix);
    apply_row(u, acc + done, n - done, idx0 + done, 1);
}

/* update_layer of a hidden conv / depthwise layer on a host: the same integers, TL_WIDE_C output
 * channels at a time through tl_train_wide.c (the caller checked tl_wide_usable). */
static void update_layer_wide(tl_model *m, int32_t i, const int32_t *d, const int8_t *in, const int8_t *out,
                              int32_t E, int64_t *dw_preview, int64_t *db_preview)
{
    tl_layer *L = &m->layers[i];
    const int32_t oc = L->out_c, cells = L->pool * L->pool, n_w = tl_layer_n_weights(L);
    const int dw_kind = L->kind == TL_LAYER_DWCONV;
    const int32_t N = L->k_h * L->k_w * L->in_c; /* conv weights per output channel */
    const uint32_t prefix = stream_prefix(m->cfg.seed, m->step, (uint32_t)i);
    int16_t D[TL_WIDE_MAX_P * TL_WIDE_C];
    int16_t v0[TL_WIDE_MAX_CELLS * TL_WIDE_C];
    int64_t G[TL_WIDE_C * TL_WIDE_N];
    /* one n-block and several channel blocks: pack B once for all of them */
    int32_t Ball_buf[TL_WIDE_BALL];
    const int32_t *Ball = NULL;
    if (!dw_kind && oc > TL_WIDE_C && N <= TL_WIDE_N &&
        (int64_t)((L->out_h * L->out_w + 1) / 2) * ((N + 15) & ~15) <= TL_WIDE_BALL) {
        tl_wide_pack_b(L, in, 0, N, Ball_buf);
        Ball = Ball_buf;
    }
    for (int32_t c0 = 0; c0 < oc; c0 += TL_WIDE_C) {
        const int32_t nc = TL_MIN(TL_WIDE_C, oc - c0);
        upd_row u[TL_WIDE_C];
        int32_t Ec[TL_WIDE_C], any[TL_WIDE_C], any_block = 0;
        int64_t bsum[TL_WIDE_C];
        for (int32_t k = 0; k < cells * TL_WIDE_C; k++)
            v0[k] = 0;
        for (int32_t cc = 0; cc < nc; cc++) {
            const int32_t c = c0 + cc;
            const int32_t rs = channel_shift(d + c * cells, cells);
            Ec[cc] = E - rs;
            for (int32_t t = 0; t < cells; t++)
                v0[t * TL_WIDE_C + cc] = (int16_t)cell_signal(d[c * cells + t], rs);
            u[cc] = channel_update(m, L, c, Ec[cc], prefix, dw_preview);
        }
        tl_wide_deltas(L, out, c0, nc, v0, D, bsum, any);
        for (int32_t cc = 0; cc < nc; cc++) {
            any[cc] |= dw_preview != NULL; /* a preview reports every channel, zeros included */
            any_block |= any[cc];
        }
        if (!any_block)
            continue;
        if (dw_kind) {
            const int32_t taps = L->k_h * L->k_w;
            tl_wide_dw_grad(L, in, D, c0, nc, G);
            for (int32_t cc = 0; cc < nc; cc++)
                if (any[cc])
                    for (int32_t tap = 0; tap < taps; tap++)
                        apply_row(&u[cc], G + tap * TL_WIDE_C + cc, 1, tap * oc + c0 + cc, 1);
        } else {
            for (int32_t n0 = 0; n0 < N; n0 += TL_WIDE_N) {
                const int32_t nn = TL_MIN(TL_WIDE_N, N - n0);
                tl_wide_conv_grad(L, in, D, Ball, n0, nn, G);
                for (int32_t cc = 0; cc < nc; cc++)
                    if (any[cc])
                        apply_row_wide(&u[cc], G + cc * nn, nn, (c0 + cc) * N + n0);
            }
        }
        for (int32_t cc = 0; cc < nc; cc++)
            if (any[cc])
                update_bias(m, L, c0 + cc, bsum[cc], Ec[cc], prefix ^ (uint32_t)(n_w + c0 + cc), db_preview);
    }
}
#endif

/* Applies (or previews) the update of layer i given its learning signal: delta(pos, c) = d_t(pos,c)
 * * f'(h) with t from the pooling grid (hidden) or t = c (classifier), exponent E. */
static void update_layer(tl_model *m, int32_t i, const tl_arena *a, const int8_t *in,
                         const int8_t *out, int32_t E, int classifier,
                         int64_t *dw_preview, int64_t *db_preview)
{
    tl_layer *L = &m->layers[i];
    const int32_t *d = a->signal;
    int16_t *delta = a->delta;
    const int32_t oh = L->out_h, ow = L->out_w, oc = L->out_c;
    const int32_t p = classifier ? 1 : L->pool;
    const int32_t bh = oh / p, bw = ow / p;
    const int32_t n_w = tl_layer_n_weights(L);
    const uint32_t prefix = stream_prefix(m->cfg.seed, m->step, (uint32_t)i);
    const int leaky = L->act == TL_ACT_LEAKY;
    int64_t acc[TL_UPD_JB];
#if TL_HOST_WIDE
    if (!classifier && tl_wide_usable(L)) {
        update_layer_wide(m, i, d, in, out, E, dw_preview, db_preview);
        return;
    }
#endif
    for (int32_t c = 0; c < oc; c++) {
        /* channel c's own block exponent: its signals may be far below the layer's largest, so
         * each channel rescales its slice of the 30-bit signal to 15 bits before the int16 map */
        const int32_t t0 = classifier ? c : c * p * p, nt = classifier ? 1 : p * p;
        const int32_t rs = channel_shift(d + t0, nt);
        const int32_t Ec = E - rs;
        /* delta map of channel c and the bias accumulator, one pooling cell at a time */
        int64_t acc_b = 0;
        int32_t nonzero = 0;
#if TL_HAVE_DSP
        if (!classifier && !leaky)
            acc_b = delta_clamp_dsp(d + t0, p, rs, out + c, ow, oc, bh, bw, L->act_min, L->act_max, delta, &nonzero);
        else
#endif
        for (int32_t cy = 0; cy < p; cy++) {
            for (int32_t cx = 0; cx < p; cx++) {
                const int32_t t = t0 + (classifier ? 0 : cy * p + cx);
                const int32_t v0 = cell_signal(d[t], rs);
                if (!classifier && !leaky) {
                    /* f' is 0 or 1: the cell adds v0 once per position left open by the clamp */
                    const int32_t lo = L->act_min, hi = L->act_max;
                    const int16_t v16 = (int16_t)v0;
                    int32_t open = 0;
                    for (int32_t oy = cy * bh; oy < (cy + 1) * bh; oy++) {
                        const int8_t *h = out + (oy * ow + cx * bw) * oc + c;
                        int16_t *drow = delta + oy * ow + cx * bw;
                        for (int32_t k = 0; k < bw; k++, h += oc) {
                            const int32_t on = *h > lo && *h < hi;
                            drow[k] = on ? v16 : 0;
                            open += on;
                        }
                    }
                    acc_b += (int64_t)v0 * open;
                    nonzero |= open ? v0 : 0;
                    continue;
                }
                for (int32_t oy = cy * bh; oy < (cy + 1) * bh; oy++) {
                    const int8_t *hrow = out + oy * ow * oc + c;
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
                        nonzero |= v;
                    }
                }
            }
        }
        if (!nonzero && !dw_preview)
            continue;
        const upd_row u = channel_update(m, L, c, Ec, prefix, dw_preview);
        const int32_t kh = L->k_h, kw = L->k_w;
        if (L->kind == TL_LAYER_FC) {
            /* dW[c][k] = delta (x_k - zp): one position, so the product is the gradient */
            const int32_t in_n = tl_layer_in_bytes(L);
            const int64_t dv = delta[0];
            for (int32_t k0 = 0; k0 < in_n; k0 += TL_UPD_JB) {
                const int32_t nk = TL_MIN(TL_UPD_JB, in_n - k0);
                for (int32_t k = 0; k < nk; k++)
                    acc[k] = dv * ((int32_t)in[k0 + k] - L->in_zp);
                apply_row(&u, acc, nk, c * in_n + k0, 1);
            }
        } else {
            /* conv (1x1 included) and depthwise: dW[c][fy][fx][j] = sum over the output positions
             * whose tap (fy, fx) falls inside the image of delta(pos) (x(tap, j) - zp). The zero
             * point comes out as zp * sum(delta over those positions), exactly. */
            const int dw_kind = L->kind == TL_LAYER_DWCONV;
            const int32_t ic = L->in_c, iw = L->in_w, ih = L->in_h;
            const int32_t n_ci = dw_kind ? 1 : ic;
#if TL_HAVE_DSP
            /* a 1x1 layer's positions are consecutive pixels of both maps: one long row (its int32
             * delta sum stays exact up to 2^16 positions) instead of oh short ones */
            const int flat = tl_layer_is_pointwise(L) && oh * ow <= 4096;
            const int32_t r_upd = 31 + u.Ec - u.ws;
            if (flat && oh * ow <= TL_UPD_SMALL && ic <= TL_UPD_SMALL_IC && !dw_preview && r_upd >= 32 &&
                r_upd <= TL_UPD_R_MAX) {
                corr_apply_dsp(delta, oh * ow, in, ic, L->in_zp, &u, c * ic);
            } else if (dw_kind && kh == 3 && kw == 3 && ow <= TL_UPD_PAIRS) {
                int64_t g[9], gs[9];
                dw3x3_grad(delta, oh, ow, in + c, ih, iw, ic, L->stride_h, L->stride_w, L->pad_top, L->pad_left,
                           g, gs);
                for (int32_t t = 0; t < 9; t++)
                    g[t] -= (int64_t)L->in_zp * gs[t];
                if (!dw_preview && r_upd >= 32 && r_upd <= TL_UPD_R_MAX)
                    apply_row_dsp(&u, g, 9, c, oc);
                else
                    apply_row(&u, g, 9, c, oc);
            } else
#endif
            for (int32_t fy = 0; fy < kh; fy++) {
                int32_t oy0, oy1;
                valid_range(oh, ih, L->stride_h, L->pad_top, fy, &oy0, &oy1);
                for (int32_t fx = 0; fx < kw; fx++) {
                    int32_t ox0, ox1;
                    valid_range(ow, iw, L->stride_w, L->pad_left, fx, &ox0, &ox1);
                    for (int32_t j0 = 0; j0 < n_ci; j0 += TL_UPD_JB) {
                        const int32_t nj = TL_MIN(TL_UPD_JB, n_ci - j0);
#if TL_HAVE_DSP
                        if (flat)
                            tap_corr_dsp(delta, oh * ow, in, oh * ow, ic, 1, 1, 0, 1, 0, oh * ow, 0, 0, j0, nj,
                                         L->in_zp, acc);
                        else
                            tap_corr_dsp(delta, ow, in, iw, ic, L->stride_h, L->stride_w, oy0, oy1, ox0, ox1,
                                         fy - L->pad_top, fx - L->pad_left, dw_kind ? c : j0, nj, L->in_zp, acc);
                        const int32_t r = 31 + u.Ec - u.ws;
                        if (!dw_kind && !dw_preview && r >= 32 && r <= TL_UPD_R_MAX) {
                            apply_row_dsp(&u, acc, nj, ((c * kh + fy) * kw + fx) * ic + j0, 1);
                            continue;
                        }
#else
                        for (int32_t j = 0; j < nj; j++)
                            acc[j] = 0;
                        const int64_t dsum = tap_corr(delta, ow, in, iw, ic, L->stride_h, L->stride_w,
                                                      oy0, oy1, ox0, ox1, fy - L->pad_top, fx - L->pad_left,
                                                      dw_kind ? c : j0, nj, acc);
                        for (int32_t j = 0; j < nj; j++)
                            acc[j] -= (int64_t)L->in_zp * dsum;
#endif
                        if (dw_kind)
                            apply_row(&u, acc, 1, (fy * kw + fx) * oc + c, 1);
                        else
                            apply_row(&u, acc, nj, ((c * kh + fy) * kw + fx) * ic + j0, 1);
                    }
                }
            }
        }
        update_bias(m, L, c, acc_b, Ec, prefix ^ (uint32_t)(n_w + c), db_preview);
    }
}

/* The block floating-point learning signal: returns s such that d = round(u 2^s / n) has
 * max |d| < 2^30 (30 bits of precision for the layer's largest element). */
static int32_t block_exponent(uint64_t umax, uint64_t n)
{
    const uint64_t target = ((uint64_t)1 << 30) * n - n;
    int32_t s = 0;
    if (umax <= target) {
        while (s < 40 && (umax << (s + 1)) <= target)
            s++;
    } else {
        while (s > -40 && umax > (target << -s))
            s--;
    }
    return s;
}

static int32_t scale_signal(int64_t u, int32_t s, uint32_t n)
{
    return (int32_t)(s >= 0 ? tl_div_round(u * ((int64_t)1 << s), n)
                            : tl_div_round(u, (int64_t)n << -s));
}

#if TL_HAVE_DSP
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
#endif

/* tl_train_hidden's step 1: P_t = sum of (h - zp) over pooling cell t, channel-major
 * t = c p^2 + y p + x (tl_wide_pool computes the same on hosts). */
static void pool_cells(const tl_layer *L, const int8_t *out, int32_t *P)
{
    const int32_t p = L->pool, oh = L->out_h, ow = L->out_w, oc = L->out_c;
    const int32_t bh = oh / p, bw = ow / p, T = oc * p * p;
    for (int32_t t = 0; t < T; t++)
        P[t] = 0;
    for (int32_t oy = 0; oy < oh; oy++) {
        const int32_t cy = oy / bh;
        for (int32_t cx = 0; cx < p; cx++) {
            const int8_t *h = out + (oy * ow + cx * bw) * oc;
            int32_t *Pc = P + cy * p + cx;
#if TL_HAVE_DSP
            if (bw <= 255) { /* int16 lanes: at most 255 * 128 */
                pool_row_dsp(h, oc, bw, bw * L->out_zp, p * p, Pc);
                continue;
            }
#endif
            for (int32_t c = 0; c < oc; c++) { /* the row's bw pixels of the cell, then - bw zp */
                const int8_t *hc = h + c;
                int32_t s = 0;
                for (int32_t k = 0; k < bw; k++, hc += oc)
                    s += *hc;
                Pc[c * p * p] += s - bw * L->out_zp;
            }
        }
    }
}

/* ---------------------------------------------------------------- hidden layers: LLS */
tl_status tl_train_hidden(tl_model *m, int32_t i, const tl_arena *a, const int8_t *in,
                          const int8_t *out, int32_t label, int32_t update,
                          int32_t *pred, int32_t *loss_q16, int64_t *dw_preview, int64_t *db_preview)
{
    tl_layer *L = &m->layers[i];
    const int32_t C = m->classes, p = L->pool;
    const int32_t oc = L->out_c;
    const int32_t T = oc * p * p;
    const int32_t basis = m->cfg.basis, inv_tau = m->cfg.inv_tau_q8, variant = m->cfg.variant;
    const uint32_t bseed = m->cfg.basis_seed;
    int32_t *P = a->signal;
    uint32_t inc[TL_MAX_CLASSES];
    int32_t acoef[TL_MAX_CLASSES] = {0}, z[TL_MAX_CLASSES] = {0}, prob[TL_MAX_CLASSES], w[TL_MAX_CLASSES];

    /* 1. pool: P_t = sum of (h - zp) over the cell, channel-major t = c p^2 + y p + x */
#if TL_HOST_WIDE
    if (T <= TL_LLS_MAX_T && tl_x86_avx2())
        tl_wide_pool(L, out, P);
    else
#endif
        pool_cells(L, out, P);
    /* 2. normalise */
    uint64_t sumsq = 0;
    for (int32_t t = 0; t < T; t++)
        sumsq += (uint64_t)((int64_t)P[t] * P[t]);
    const uint32_t n = tl_isqrt64(sumsq);
    if (n == 0) {
        /* a dead layer (all outputs at the zero point) has no direction to learn from */
        *pred = -1;
        *loss_q16 = label >= 0 ? tl_ln_ratio_q16((uint64_t)C, 1) : -1;
        return TL_OK;
    }
    /* 3. project and 4. local softmax */
    for (int32_t c = 0; c < C; c++) {
        inc[c] = basis_increment(c, C);
        int64_t S = 0;
        if (basis == TL_BASIS_SQUARE) { /* sum P_t (+-2^15 or 0) = 2^15 sum +-P_t, exactly */
#if TL_HOST_WIDE
            if (tl_x86_avx2())
                S = tl_wide_square_proj(P, T, inc[c]);
            else
#endif
            {
                uint32_t ph = 0;
                for (int32_t t = 0; t < T; t++, ph += inc[c]) {
                    const int32_t v = (ph & 0x80000000u) ? -P[t] : P[t];
                    S += (ph << 1) ? v : 0;
                }
            }
            S *= TL_BASIS_ONE;
        } else {
            for (int32_t t = 0; t < T; t++)
                S += (int64_t)P[t] * basis_value(basis, bseed, inc[c], c, t);
        }
        acoef[c] = (int32_t)tl_div_round(S * 2, n); /* S has Q15: S 2^16 / (2^15 n) */
    }
    for (int32_t j = 0; j < C; j++) {
        int64_t v = acoef[j];
        if (variant == TL_LLS_M) {
            v = tl_shr_round(v * L->lls_m[j], 16);
        } else if (variant == TL_LLS_MXM) {
            v = 0;
            for (int32_t c = 0; c < C; c++)
                v += (int64_t)acoef[c] * L->lls_m[c * C + j];
            v = tl_shr_round(v, 16);
        }
        v = tl_shr_round(v * inv_tau, 8);
        z[j] = (int32_t)TL_CLAMP(v, -(int64_t)INT32_MAX / 2, (int64_t)INT32_MAX / 2);
    }
    int32_t loss = -1;
    *pred = softmax(z, C, label, prob, &loss);
    *loss_q16 = loss;
    if (!update || label < 0)
        return TL_OK;

    /* 5. error, and its gradient w.r.t. the projections a_c (w_c, Q24, 1/tau included) */
    int32_t e[TL_MAX_CLASSES];
    for (int32_t c = 0; c < C; c++)
        e[c] = prob[c] - (c == label ? TL_Q24_ONE : 0);
    for (int32_t c = 0; c < C; c++) {
        int64_t v = e[c];
        if (variant == TL_LLS_M) {
            v = tl_shr_round(v * L->lls_m[c], 16);
        } else if (variant == TL_LLS_MXM) {
            v = 0;
            for (int32_t j = 0; j < C; j++)
                v += (int64_t)L->lls_m[c * C + j] * e[j];
            v = tl_shr_round(v, 16);
        }
        w[c] = (int32_t)TL_CLAMP(tl_shr_round(v * inv_tau, 8), -(int64_t)INT32_MAX / 2, (int64_t)INT32_MAX / 2);
    }
    /* the modulation's own gradient, dL/dM = a (x) e / tau, applied now (after w used the old M) */
    if (variant != TL_LLS_PLAIN && !dw_preview) {
        const int32_t nm = variant == TL_LLS_M ? C : C * C;
        for (int32_t k = 0; k < nm; k++) {
            const int32_t cc = variant == TL_LLS_M ? k : k / C, jj = variant == TL_LLS_M ? k : k % C;
            const int64_t grad = tl_shr_round(tl_shr_round((int64_t)acoef[cc] * e[jj], 24) * inv_tau, 8); /* Q16 */
            const int64_t dm = scale_update(grad, L->lls_m_lr_mult, L->lls_m_lr_shift, 0, m->cfg.rounding,
                                            tl_rand4(m->cfg.seed, m->step, 0x4D00u + (uint32_t)i, (uint32_t)k), NULL);
            L->lls_m[k] = (int32_t)TL_CLAMP((int64_t)L->lls_m[k] - dm, -(1 << 24), 1 << 24);
        }
    }
    /* 6. back through projection (g), normalisation (u): three passes over T so that only the
     *    pooled vector is stored; g is recomputed from the basis instead of being kept. */
    uint32_t ph[TL_MAX_CLASSES];
#if TL_HOST_WIDE
    /* a host keeps u_t (and on the square basis g_t) instead of recomputing them: 36 KB of stack */
    int64_t u_buf[TL_LLS_MAX_T], g_buf[TL_LLS_MAX_T];
    int64_t *const u_kept = T <= TL_LLS_MAX_T ? u_buf : NULL; /* pool 1 on > TL_LLS_MAX_T channels */
    int64_t *const g_kept = basis == TL_BASIS_SQUARE && T <= TL_LLS_MAX_T && tl_x86_avx2() ? g_buf : NULL;
    if (g_kept)
        tl_wide_square_g(inc, w, C, T, g_kept);
#else
    int64_t *const u_kept = NULL, *const g_kept = NULL;
#endif
    for (int32_t c = 0; c < C; c++)
        ph[c] = 0;
    int64_t gh = 0;
    for (int32_t t = 0; t < T; t++)
        gh += (g_kept ? g_kept[t] : TL_G_AT(basis, bseed, inc, w, C, t, ph)) * P[t];
    const tl_divisor dn = divisor_of(n);
    const int64_t gdot = div_round_by(gh, &dn); /* g . h^, Q24 */
    uint64_t umax = 0;
#if TL_HAVE_DSP
    /* |u_t| <= |g_t| + |gdot P_t / n| <= sum |w_c| + |gdot| (|P_t| <= n = floor(||P||)): when that
     * fits int32 the second pass keeps u_t in place of P_t and the third only scales it */
    int64_t wabs = gdot < 0 ? -gdot : gdot;
    for (int32_t c = 0; c < C; c++)
        wabs += w[c] < 0 ? -(int64_t)w[c] : w[c];
    const int keep = wabs <= INT32_MAX;
#else
    const int keep = 0;
#endif
    for (int32_t c = 0; c < C; c++)
        ph[c] = 0;
    for (int32_t t = 0; t < T; t++) {
        const int64_t u = (g_kept ? g_kept[t] : TL_G_AT(basis, bseed, inc, w, C, t, ph)) - div_round_by(gdot * P[t], &dn);
        if (u_kept)
            u_kept[t] = u;
        const uint64_t mag = u < 0 ? (uint64_t)(-u) : (uint64_t)u;
        umax = TL_MAX(umax, mag);
        if (keep)
            P[t] = (int32_t)u;
    }
    if (umax == 0)
        return TL_OK;
    const int32_t s = block_exponent(umax, n);
    const tl_divisor ds = divisor_of(s >= 0 ? (uint64_t)n : (uint64_t)n << -s);
    for (int32_t c = 0; c < C; c++)
        ph[c] = 0;
    for (int32_t t = 0; t < T; t++) {
        const int64_t u = u_kept ? u_kept[t]
                          : keep ? P[t] : TL_G_AT(basis, bseed, inc, w, C, t, ph) - div_round_by(gdot * P[t], &dn);
        P[t] = (int32_t)div_round_by(s >= 0 ? u * ((int64_t)1 << s) : u, &ds); /* scale_signal; P_t no longer needed */
    }
    /* 7. the update: real signal d 2^-(24+s) */
    update_layer(m, i, a, in, out, 24 + s, 0, dw_preview, db_preview);
    return TL_OK;
}

/* ---------------------------------------------------------------- last layer: cross-entropy */
tl_status tl_train_classifier(tl_model *m, int32_t i, const tl_arena *a, const int8_t *in,
                              const int8_t *out, int32_t label, int32_t update,
                              int32_t *pred, int32_t *loss_q16, int64_t *dw_preview, int64_t *db_preview)
{
    tl_layer *L = &m->layers[i];
    const int32_t C = m->classes;
    int32_t z[TL_MAX_CLASSES] = {0}, prob[TL_MAX_CLASSES];
    /* logits in Q16: (q - zp) s_out 2^16, s_out = logit_mult 2^(logit_shift - 31) */
    for (int32_t c = 0; c < C; c++) {
        const int64_t v = (int64_t)((int32_t)out[c] - L->out_zp) * L->logit_mult;
        const int32_t sh = 15 - L->logit_shift;
        const int64_t zq = sh >= 0 ? tl_shr_round(v, TL_MIN(sh, 62)) : v * ((int64_t)1 << TL_MIN(-sh, 16));
        z[c] = (int32_t)TL_CLAMP(zq, -(int64_t)INT32_MAX / 2, (int64_t)INT32_MAX / 2);
    }
    if (L->logit_mult == 0) /* no logit scale: rank by the raw outputs */
        for (int32_t c = 0; c < C; c++)
            z[c] = (int32_t)out[c] << 8;
    int32_t loss = -1;
    *pred = softmax(z, C, label, prob, &loss);
    *loss_q16 = loss;
    if (!update || label < 0)
        return TL_OK;
    uint64_t umax = 0;
    int64_t e[TL_MAX_CLASSES];
    for (int32_t c = 0; c < C; c++) {
        e[c] = prob[c] - (c == label ? TL_Q24_ONE : 0);
        umax = TL_MAX(umax, (uint64_t)(e[c] < 0 ? -e[c] : e[c]));
    }
    if (umax == 0)
        return TL_OK;
    const int32_t s = block_exponent(umax, 1);
    for (int32_t c = 0; c < C; c++)
        a->signal[c] = scale_signal(e[c], s, 1);
    update_layer(m, i, a, in, out, 24 + s, 1, dw_preview, db_preview);
    return TL_OK;
}
