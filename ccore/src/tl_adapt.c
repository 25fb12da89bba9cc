/* Label-free camera adaptation by per-channel statistic matching (issue 16), in integers.
 *
 * For one conv / dwconv / fc layer, the statistics are those of its int32 accumulator (bias
 * included, before requantization), per output channel, over every output position of every
 * image fed: an int64 sum and a 128-bit sum of squares per channel in caller-owned scratch
 * (tl_adapt_stats_bytes: 24 bytes per channel, no malloc). tl_adapt_stats_finish turns them into
 * the mean and standard deviation in Q8 accumulator units (population std, integer sqrt).
 *
 * tl_adapt_apply re-centres and re-scales each channel so that, on the images the new statistics
 * came from, the accumulator's mean and std become the reference ones, in the units of the
 * original layer: with g = std_ref / std_new (Q28, clamped to [1/8, 8); 1 when either std is
 * below one accumulator LSB), the requantization multiplier becomes M * g (renormalised to
 * [2^30, 2^31) with its shift) and the bias b + round(mean_ref / g) - mean_new. The int8 weights
 * are never touched and the output scale stays, so the next layer's input scale is unchanged.
 *
 * The statistics come from a plain reference loop over the layer (not the optimised kernels), so
 * they do not depend on which kernel path a build takes. Everything is integer and C99: the host
 * simulation and the firmware get the same bits (host/adapt.py mirrors the arithmetic in Python
 * for the tests).
 */
#include "tinylls.h"
#include "tl_layer.h"

enum {
    G_FRAC = 28,                          /* g in Q28 */
    STAT_WORDS = 3                        /* per channel: int64 sum, uint64 sumsq lo, uint64 sumsq hi */
};
#define G_ONE ((int64_t)1 << G_FRAC)
#define G_MIN (G_ONE >> 3)                /* g >= 1/8 */
#define G_MAX (G_ONE << 3)                /* g < 8 (G_MAX - 1 fits int32) */
#define STD_MIN 256                       /* one accumulator LSB in Q8 */

/* ---------------------------------------------------------------- 128-bit helpers */
typedef struct {
    uint64_t hi, lo;
} u128;

static u128 mul64(uint64_t a, uint64_t b)
{
    const uint64_t a0 = a & 0xFFFFFFFFu, a1 = a >> 32, b0 = b & 0xFFFFFFFFu, b1 = b >> 32;
    const uint64_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
    const uint64_t mid = (p00 >> 32) + (p01 & 0xFFFFFFFFu) + (p10 & 0xFFFFFFFFu);
    u128 r;
    r.lo = (mid << 32) | (p00 & 0xFFFFFFFFu);
    r.hi = p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32);
    return r;
}

static u128 add128(u128 a, u128 b)
{
    u128 r;
    r.lo = a.lo + b.lo;
    r.hi = a.hi + b.hi + (r.lo < a.lo ? 1u : 0u);
    return r;
}

static u128 sub128(u128 a, u128 b) /* a >= b */
{
    u128 r;
    r.lo = a.lo - b.lo;
    r.hi = a.hi - b.hi - (a.lo < b.lo ? 1u : 0u);
    return r;
}

static int lt128(u128 a, u128 b)
{
    return a.hi < b.hi || (a.hi == b.hi && a.lo < b.lo);
}

static u128 shl128(u128 a, int s) /* 0 < s < 64 */
{
    u128 r;
    r.hi = (a.hi << s) | (a.lo >> (64 - s));
    r.lo = a.lo << s;
    return r;
}

/* floor(a / d), d > 0: restoring long division, one bit at a time (per channel, not per tap). */
static u128 div128(u128 a, uint64_t d)
{
    u128 q = {0, 0};
    uint64_t rem = 0;
    for (int i = 127; i >= 0; i--) {
        const uint64_t bit = i >= 64 ? (a.hi >> (i - 64)) & 1u : (a.lo >> i) & 1u;
        const uint64_t top = rem >> 63;
        rem = (rem << 1) | bit;
        if (top || rem >= d) {
            rem -= d;
            if (i >= 64)
                q.hi |= (uint64_t)1 << (i - 64);
            else
                q.lo |= (uint64_t)1 << i;
        }
    }
    return q;
}

/* floor(sqrt(v)) */
static uint64_t isqrt64(uint64_t v)
{
    uint64_t r = 0, bit = (uint64_t)1 << 62;
    while (bit > v)
        bit >>= 2;
    while (bit != 0) {
        if (v >= r + bit) {
            v -= r + bit;
            r = (r >> 1) + bit;
        } else {
            r >>= 1;
        }
        bit >>= 2;
    }
    return r;
}

/* round(a / b) half away from zero, b > 0, |a| < 2^62 */
static int64_t div_round(int64_t a, int64_t b)
{
    return a >= 0 ? (a + b / 2) / b : -((-a + b / 2) / b);
}

/* ---------------------------------------------------------------- statistics */

static int has_weights(const tl_layer *L)
{
    return L != 0 && (L->kind == TL_LAYER_CONV || L->kind == TL_LAYER_DWCONV || L->kind == TL_LAYER_FC) &&
           L->out_c >= 1 && L->weights != 0 && L->bias != 0;
}

int32_t tl_adapt_stats_bytes(const tl_layer *L)
{
    if (!has_weights(L) || L->out_c > 4096)
        return TL_ERR_ARG;
    return 8 * STAT_WORDS * L->out_c;
}

tl_status tl_adapt_stats_reset(const tl_layer *L, void *stats)
{
    const int32_t n = tl_adapt_stats_bytes(L);
    if (n < 0 || stats == 0)
        return TL_ERR_ARG;
    uint64_t *s = (uint64_t *)stats;
    for (int32_t i = 0; i < n / 8; i++)
        s[i] = 0;
    return TL_OK;
}

static void add_acc(uint64_t *s, int32_t c, int32_t acc)
{
    uint64_t *w = s + STAT_WORDS * c;
    const int64_t a = acc;
    w[0] = (uint64_t)((int64_t)w[0] + a);     /* |sum| < 2^31 per value: no wrap below 2^32 values */
    const uint64_t sq = (uint64_t)(a * a);    /* < 2^62 */
    w[1] += sq;
    if (w[1] < sq)
        w[2]++;
}

tl_status tl_adapt_stats_add(const tl_layer *L, const int8_t *in, void *stats)
{
    if (tl_adapt_stats_bytes(L) < 0 || in == 0 || stats == 0)
        return TL_ERR_ARG;
    uint64_t *s = (uint64_t *)stats;
    const int32_t zp = L->in_zp;
    const int8_t *w = L->weights;
    if (L->kind == TL_LAYER_FC) {
        const int32_t n = tl_layer_in_bytes(L);
        for (int32_t o = 0; o < L->out_c; o++) {
            int32_t acc = L->bias[o];
            for (int32_t i = 0; i < n; i++)
                acc += (int32_t)w[(int64_t)o * n + i] * ((int32_t)in[i] - zp);
            add_acc(s, o, acc);
        }
        return TL_OK;
    }
    const int32_t ih = L->in_h, iw = L->in_w, ic = L->in_c, kh = L->k_h, kw = L->k_w, oc = L->out_c;
    for (int32_t oy = 0; oy < L->out_h; oy++) {
        for (int32_t ox = 0; ox < L->out_w; ox++) {
            const int32_t y0 = oy * L->stride_h - L->pad_top, x0 = ox * L->stride_w - L->pad_left;
            for (int32_t c = 0; c < oc; c++) {
                int32_t acc = L->bias[c];
                for (int32_t fy = 0; fy < kh; fy++) {
                    const int32_t y = y0 + fy;
                    if (y < 0 || y >= ih)
                        continue;          /* padding: (zp - zp) w = 0 */
                    for (int32_t fx = 0; fx < kw; fx++) {
                        const int32_t x = x0 + fx;
                        if (x < 0 || x >= iw)
                            continue;
                        const int8_t *px = in + ((int64_t)y * iw + x) * ic;
                        if (L->kind == TL_LAYER_DWCONV) {
                            acc += (int32_t)w[((int64_t)fy * kw + fx) * oc + c] * ((int32_t)px[c] - zp);
                        } else {
                            const int8_t *wc = w + (((int64_t)c * kh + fy) * kw + fx) * ic;
                            for (int32_t i = 0; i < ic; i++)
                                acc += (int32_t)wc[i] * ((int32_t)px[i] - zp);
                        }
                    }
                }
                add_acc(s, c, acc);
            }
        }
    }
    return TL_OK;
}

tl_status tl_adapt_stats_finish(const tl_layer *L, const void *stats, int32_t n_images, int32_t *mean,
                                int32_t *std_q8)
{
    if (tl_adapt_stats_bytes(L) < 0 || stats == 0 || n_images < 1 || mean == 0 || std_q8 == 0)
        return TL_ERR_ARG;
    const int64_t positions = L->kind == TL_LAYER_FC ? 1 : (int64_t)L->out_h * L->out_w;
    const int64_t count = positions * n_images;
    if (count > 0x7FFFFFFF)
        return TL_ERR_ARG;                 /* keeps count * sumsq inside 128 bits */
    const uint64_t *s = (const uint64_t *)stats;
    for (int32_t c = 0; c < L->out_c; c++) {
        const int64_t sum = (int64_t)s[STAT_WORDS * c];
        const u128 sq = {s[STAT_WORDS * c + 2], s[STAT_WORDS * c + 1]};
        /* mean = round(sum / count), half away from zero: |mean| <= max |acc| < 2^31 */
        const uint64_t asum = sum < 0 ? (uint64_t)0 - (uint64_t)sum : (uint64_t)sum;
        const uint64_t mq = (asum + (uint64_t)count / 2) / (uint64_t)count;
        const int32_t mean_c = sum < 0 ? -(int32_t)mq : (int32_t)mq;
        /* var_q16 = floor((count * sumsq - sum^2) * 2^16 / count^2) */
        u128 csq = add128(mul64((uint64_t)count, sq.lo), (u128){mul64((uint64_t)count, sq.hi).lo, 0});
        u128 s2 = mul64(asum, asum);
        u128 var_num = lt128(csq, s2) ? (u128){0, 0} : sub128(csq, s2);
        u128 vq;
        if (var_num.hi < ((uint64_t)1 << 46))  /* < 2^110: the shift is exact */
            vq = div128(div128(shl128(var_num, 16), (uint64_t)count), (uint64_t)count);
        else
            vq = div128(shl128(div128(var_num, (uint64_t)count), 16), (uint64_t)count);
        /* a std of 2^23 accumulator units or more saturates (no real layer comes near) */
        const uint64_t sd = (vq.hi != 0 || vq.lo >= ((uint64_t)1 << 62)) ? 0x7FFFFFFFu : isqrt64(vq.lo);
        mean[c] = mean_c;
        std_q8[c] = (int32_t)(sd > 0x7FFFFFFFu ? 0x7FFFFFFFu : sd);
    }
    return TL_OK;
}

/* ---------------------------------------------------------------- the update */

/* The accumulator bound of tl_modelfile.c's loader: |bias| + taps * 255 * 128 must fit int32. */
static int64_t bias_limit(const tl_layer *L)
{
    const int64_t taps = L->kind == TL_LAYER_CONV ? (int64_t)L->k_h * L->k_w * L->in_c
                       : L->kind == TL_LAYER_DWCONV ? (int64_t)L->k_h * L->k_w
                       : (int64_t)tl_layer_in_bytes(L);
    return 0x7FFFFFFF - taps * 255 * 128;
}

int32_t tl_adapt_gain_q28(int32_t ref_std_q8, int32_t new_std_q8)
{
    if (ref_std_q8 < STD_MIN || new_std_q8 < STD_MIN)
        return (int32_t)G_ONE;
    int64_t g = ((int64_t)ref_std_q8 * G_ONE + new_std_q8 / 2) / new_std_q8;
    return (int32_t)TL_CLAMP(g, G_MIN, G_MAX - 1);
}

tl_status tl_adapt_apply(const tl_layer *L, const int32_t *ref_mean, const int32_t *ref_std_q8,
                         const int32_t *new_mean, const int32_t *new_std_q8, int32_t *bias, int32_t *out_mult,
                         int32_t *out_shift)
{
    if (tl_adapt_stats_bytes(L) < 0 || ref_mean == 0 || ref_std_q8 == 0 || new_mean == 0 ||
        new_std_q8 == 0 || bias == 0 || out_mult == 0 || out_shift == 0)
        return TL_ERR_ARG;
    const int64_t lim = bias_limit(L);
    if (lim < 0)
        return TL_ERR_SHAPE;
    for (int32_t c = 0; c < L->out_c; c++) {
        const int32_t mult = out_mult[c], shift = out_shift[c];
        if (!((mult == 0 || mult >= (1 << 30)) && shift >= -31 && shift <= 30))
            return TL_ERR_QUANT;
    }
    for (int32_t c = 0; c < L->out_c; c++) {
        const int32_t mult = out_mult[c];
        if (mult == 0)
            continue;                      /* a dead channel stays dead */
        int64_t g = tl_adapt_gain_q28(ref_std_q8[c], new_std_q8[c]);
        int32_t new_mult = mult, new_shift = out_shift[c];
        if (g != G_ONE) {
            /* mult * g / 2^28 as a quantized multiplier: the top 31 bits of the product, rounded */
            const uint64_t p = (uint64_t)mult * (uint64_t)g;   /* < 2^31 * 2^31 */
            int t = 0;
            while ((p >> t) >= ((uint64_t)1 << 31))
                t++;                       /* p >> t in [2^30, 2^31); p >= 2^55, so t >= 25 */
            uint64_t m = (p + ((uint64_t)1 << (t - 1))) >> t;
            if (m == ((uint64_t)1 << 31)) {
                m >>= 1;
                t++;
            }
            const int32_t sh = out_shift[c] + t - G_FRAC;
            if (sh < -31 || sh > 30) {
                g = G_ONE;                 /* not representable: only re-centre this channel */
            } else {
                new_mult = (int32_t)m;
                new_shift = sh;
            }
        }
        /* acc' = g (acc + delta) must have mean mean_ref: delta = mean_ref / g - mean_new */
        const int64_t b = (int64_t)bias[c] + div_round((int64_t)ref_mean[c] * G_ONE, g) - new_mean[c];
        bias[c] = (int32_t)TL_CLAMP(b, -lim, lim);
        out_mult[c] = new_mult;
        out_shift[c] = new_shift;
    }
    return TL_OK;
}

/* ---------------------------------------------------------------- on a model, in its arena
 * The board's schedule: for layer i, statistics accumulate image by image in the arena while
 * layers 0 .. i-1 (already adapted) run in the same arena, with the layout of tl_model.c: layer
 * j's output at the start of the arena for even j, at its end (arena_bytes - out bytes) for odd j,
 * and the model input possibly staged at tl_model_input_offset(). The statistics take what none
 * of these reaches, so they survive between images (or, when no such gap is large enough, in
 * bytes the caller adds past the plan: tl_adapt_extra_bytes); the mean/std of APPLY go in the part
 * the statistics leave. */

static int32_t round8(int32_t v)
{
    return (v + 7) & ~7;
}

/* Where layer's statistics stay while layers 0 .. layer-1 run in the arena (tl_adapt_feed), and
 * where those layers put their outputs: even layers from byte *base up, odd layers against the top
 * of the plan (the inference ping-pong, shifted up by *base). Three placements, first that fits:
 *  1. the plan's own ping-pong (base 0), statistics in a gap it never reaches;
 *  2. statistics at the bottom [0, sb) and even outputs from base = round8(sb): fits when every
 *     layer's input and output still fit side by side above it and the first output stays below a
 *     staged input - the forward passes need far less of the arena than training does, so this
 *     keeps adaptation inside the training plan where the gap of 1. is too small;
 *  3. past the plan (base 0), in bytes the caller added to the arena for this. */
static tl_status place(const tl_model *m, int32_t layer, int32_t input_in_arena, int32_t arena_size,
                       int32_t *stats_off, int32_t *tmp_off, int32_t *base)
{
    if (!m || layer < 0 || layer >= m->n_layers || !stats_off || !tmp_off)
        return TL_ERR_ARG;
    const int32_t need = tl_model_arena_bytes(m);
    if (need < 0)
        return need;
    if (arena_size < need)
        return TL_ERR_ARENA;
    const tl_layer *L = &m->layers[layer];
    const int32_t sb = tl_adapt_stats_bytes(L), tb = 8 * L->out_c;
    if (sb < 0 || L->adapt_ref == 0 || L->adapt_mult == 0 || L->adapt_shift == 0 || layer == m->n_layers - 1)
        return TL_ERR_ARG;                 /* not a layer the model file lets adapt */
    int32_t top = need;                    /* the staged input's offset, or the plan's end */
    if (input_in_arena) {
        top = tl_model_input_offset(m);
        if (top < 0)
            return top;
    }
    /* 1. a gap inside the plan that layers 0 .. layer-1 (and a staged input) never reach */
    int32_t lo = 0, hi = top;
    for (int32_t j = 0; j < layer; j++) {
        const int32_t ob = round8(tl_layer_out_bytes(&m->layers[j]));
        if (j % 2 == 0)
            lo = TL_MAX(lo, ob);
        else
            hi = TL_MIN(hi, (need - ob) & ~7);
    }
    int32_t so = (hi - sb) & ~7, b = 0;
    if (hi - lo < sb || so < lo) {
        /* 2. statistics at the bottom, even outputs above them */
        b = round8(sb);
        int32_t fits = layer == 0 || b + tl_layer_out_bytes(&m->layers[0]) <= top;
        for (int32_t j = 1; j < layer && fits; j++) {
            const int32_t even = tl_layer_out_bytes(&m->layers[j % 2 == 0 ? j : j - 1]);
            const int32_t odd = tl_layer_out_bytes(&m->layers[j % 2 == 0 ? j - 1 : j]);
            fits = b + even <= need - odd;  /* layer j's input and output side by side */
        }
        so = 0;
        if (!fits) {
            /* 3. past the plan (the forward passes of tl_adapt_feed use only the plan: no host
             * fast-path buffers) */
            so = need;
            b = 0;
            if (arena_size - need < sb)
                return TL_ERR_ARENA;
        }
    }
    *stats_off = so;
    if (base)
        *base = b;
    if (so >= tb)
        *tmp_off = 0;
    else if (arena_size - round8(so + sb) >= tb)
        *tmp_off = round8(so + sb);
    else
        return TL_ERR_ARENA;
    return TL_OK;
}

tl_status tl_adapt_plan(const tl_model *m, int32_t layer, int32_t input_in_arena, int32_t arena_size,
                        int32_t *stats_off, int32_t *tmp_off)
{
    return place(m, layer, input_in_arena, arena_size, stats_off, tmp_off, 0);
}

int32_t tl_adapt_extra_bytes(const tl_model *m, int32_t layer, int32_t input_in_arena)
{
    int32_t so, to;
    const int32_t need = m ? tl_model_arena_bytes(m) : TL_ERR_ARG;
    if (need < 0)
        return need;
    tl_status s = tl_adapt_plan(m, layer, input_in_arena, need, &so, &to);
    if (s == TL_OK)
        return 0;
    if (s != TL_ERR_ARENA)
        return s;
    return round8(tl_adapt_stats_bytes(&m->layers[layer]));
}

static tl_status arena_ok(const tl_model *m, const tl_ctx *arena)
{
    if (!arena || !arena->buf || ((uintptr_t)arena->buf & 7u))
        return TL_ERR_ARG;
    const int32_t need = tl_model_arena_bytes(m);
    if (need < 0)
        return need;
    return arena->size < need ? TL_ERR_ARENA : TL_OK;
}

/* The checks every board step starts with: a model, an arena that holds its plan, and where
 * layer's statistics (*so) and APPLY's mean/std (*to) live in it (tl_adapt_plan). */
static tl_status locate(const tl_model *m, const tl_ctx *arena, int32_t layer, int32_t input_in_arena,
                        int32_t *so, int32_t *to, int32_t *base)
{
    tl_status s = m ? arena_ok(m, arena) : TL_ERR_ARG;
    if (s == TL_OK)
        s = place(m, layer, input_in_arena, arena->size, so, to, base);
    return s;
}

tl_status tl_adapt_begin(const tl_model *m, const tl_ctx *arena, int32_t layer, int32_t input_in_arena)
{
    int32_t so, to, base;
    tl_status s = locate(m, arena, layer, input_in_arena, &so, &to, &base);
    if (s != TL_OK)
        return s;
    return tl_adapt_stats_reset(&m->layers[layer], (uint8_t *)arena->buf + so);
}

tl_status tl_adapt_feed(const tl_model *m, const tl_ctx *arena, int32_t layer, int32_t input_in_arena,
                        const int8_t *input)
{
    int32_t so, to, base;
    tl_status s = locate(m, arena, layer, input_in_arena, &so, &to, &base);
    if (s != TL_OK)
        return s;
    if (!input)
        return TL_ERR_ARG;
    int8_t *act = (int8_t *)arena->buf;
    const int32_t need = tl_model_arena_bytes(m);
    const int8_t *cur = input;
    for (int32_t j = 0; j < layer; j++) {
        const tl_layer *Lj = &m->layers[j];
        int8_t *out = j % 2 == 0 ? act + base : act + need - tl_layer_out_bytes(Lj);
        s = tl_layer_forward(Lj, cur, out);
        if (s != TL_OK)
            return s;
        cur = out;
    }
    return tl_adapt_stats_add(&m->layers[layer], cur, act + so);
}

tl_status tl_adapt_finish_apply(tl_model *m, const tl_ctx *arena, int32_t layer, int32_t input_in_arena,
                                int32_t n_images)
{
    int32_t so, to, base;
    tl_status s = locate(m, arena, layer, input_in_arena, &so, &to, &base);
    if (s != TL_OK)
        return s;
    tl_layer *L = &m->layers[layer];
    int32_t *mean = (int32_t *)(void *)((uint8_t *)arena->buf + to), *sd = mean + L->out_c;
    s = tl_adapt_stats_finish(L, (uint8_t *)arena->buf + so, n_images, mean, sd);
    if (s != TL_OK)
        return s;
    s = tl_adapt_apply(L, L->adapt_ref, L->adapt_ref + L->out_c, mean, sd, L->bias, L->adapt_mult, L->adapt_shift);
    if (s != TL_OK)
        return s;
    return tl_model_prepare(m);
}
