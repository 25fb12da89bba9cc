/* LLS training in integers, the head: a layer's local head (pool -> L2 normalise -> project on a
 * fixed basis -> softmax -> error -> learning signal), plus softmax cross-entropy for the last
 * layer. The weight update from the signal is tl_lls_update.c's (through tl_lls_update, the one
 * dispatch point); the float rule it follows is host/reference.py (lls_head).
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
#include "tl_lls.h"

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

/* g_square in int32, for a caller that knows sum_c |w_c| <= INT32_MAX (so every partial sum fits):
 * the same integer, the sign taken as a mask instead of a branch. */
static inline int32_t g_square32(const uint32_t *inc, const int32_t *w, int32_t C, uint32_t *ph)
{
    int32_t g = 0;
    for (int32_t c = 0; c < C; c++) {
        const uint32_t v = ph[c];
        ph[c] = v + inc[c];
        const int32_t m = -(int32_t)(v >> 31); /* -1 in the second half turn */
        const int32_t wc = (w[c] ^ m) - m;
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

/* g_at in the passes over T with the square basis inlined (on a microcontroller the call costs
 * more than the sum for a few classes) */
#define TL_G_AT(basis, seed, inc, w, C, t, ph) \
    ((basis) == TL_BASIS_SQUARE ? g_square(inc, w, C, ph) : g_at(basis, seed, inc, w, C, t, ph))

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

static inline __attribute__((always_inline)) int64_t div_round_by(int64_t a, const tl_divisor *d)
{
    /* as tl_div_round: (|a| + n/2) / n with the sign of a; |a| + n/2 < 2^63 at every use */
    const uint64_t num = (a < 0 ? (uint64_t)0 - (uint64_t)a : (uint64_t)a) + (d->n >> 1);
#if TL_HAVE_DSP
    if ((num >> 32) == 0 && (d->n >> 32) == 0) { /* both fit 32 bits: one UDIV, the same floor */
        const uint64_t q32 = (uint32_t)num / (uint32_t)d->n;
        return a < 0 ? -(int64_t)q32 : (int64_t)q32;
    }
#endif
    uint64_t q = tl_umulh64(num, d->r);
    uint64_t rem = num - q * d->n;
    if (TL_DIV_BRANCHLESS) {
        /* the estimate is at most 2 low: two branch-free steps (the loop's branch mispredicts often) */
        const uint64_t c1 = rem >= d->n;
        q += c1;
        rem -= c1 ? d->n : 0;
        q += rem >= d->n;
    } else {
        while (rem >= d->n) {
            rem -= d->n;
            q++;
        }
    }
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
    /* The differences are formed in int64: logits from a crafted file's multipliers can span more
     * than int32 (found by fuzz/fuzz_modelfile_rom.c). A real model's never do, so these are the
     * plain int32 expressions there; beyond, exp has long underflowed to 0 and the loss saturates. */
    for (int32_t c = 0; c < classes; c++) {
        const int64_t dz = (int64_t)z[c] - zmax;
        p[c] = tl_exp_q16_to_q24(dz < INT32_MIN ? INT32_MIN : (int32_t)dz);
        sum += p[c];
    }
    /* -ln p_y = (zmax - z_y) + ln(sum exp(z - zmax)), exact even when p_y underflows */
    if (label >= 0) {
        const int64_t l = (int64_t)zmax - z[label] + tl_ln_ratio_q16((uint64_t)sum, (uint64_t)TL_Q24_ONE);
        *loss = l > INT32_MAX ? INT32_MAX : (int32_t)l;
    }
    for (int32_t c = 0; c < classes; c++)
        p[c] = (int32_t)tl_div_round((int64_t)p[c] << 24, sum);
    return best;
}

/* ---------------------------------------------------------------- learning signal */
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

/* tl_train_hidden's step 1: P_t = sum of (h - zp) over pooling cell t, channel-major
 * t = c p^2 + y p + x (tl_lls_pool_dsp and tl_wide_pool compute the same). */
void tl_lls_pool_ref(const tl_layer *L, const int8_t *out, int32_t *P)
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

/* sum_t P_t sign(sin(2 pi inc t / 2^32)) (0 where the phase is 0 or half a turn): the square
 * basis' projection of one class without its 2^15 (tl_wide_square_proj computes the same). */
int64_t tl_lls_square_proj_ref(const int32_t *P, int32_t T, uint32_t inc)
{
    int64_t S = 0;
    uint32_t ph = 0;
    for (int32_t t = 0; t < T; t++, ph += inc) {
        const int32_t v = (ph & 0x80000000u) ? -P[t] : P[t];
        S += (ph << 1) ? v : 0;
    }
    return S;
}

/* Steps 1-3 of a hidden layer's head on its output `out`: the pooled vector P in a->signal, its
 * norm n (returned; 0 for a dead layer, and then nothing else is written), the projections
 * acoef (Q16), the local logits z (Q16, modulation and 1/tau applied) and, for the square basis,
 * sq[c] = sum_t +-P_t (the training head's g . h reuses them). Shared by the training
 * head below and the early-exit confidence (tl_lls_head_confidence), so both see the same bits. */
static uint32_t head_logits(const tl_model *m, int32_t i, const tl_arena *a, const int8_t *out,
                            uint32_t *inc, int32_t *acoef, int32_t *z, int64_t *sq)
{
    const tl_layer *L = &m->layers[i];
    const int32_t C = m->classes, p = L->pool;
    const int32_t T = L->out_c * p * p;
    const int32_t basis = m->cfg.basis, inv_tau = m->cfg.inv_tau_q8, variant = m->cfg.variant;
    const uint32_t bseed = m->cfg.basis_seed;
    int32_t *P = a->signal;

    /* 1. pool: P_t = sum of (h - zp) over the cell, channel-major t = c p^2 + y p + x */
    tl_lls_pool(L, out, P);
    /* 2. normalise */
    uint64_t sumsq = 0;
    for (int32_t t = 0; t < T; t++)
        sumsq += (uint64_t)((int64_t)P[t] * P[t]);
    const uint32_t n = tl_isqrt64(sumsq);
    if (n == 0)
        return 0;
    /* 3. project and 4. local softmax */
    for (int32_t c = 0; c < C; c++) {
        inc[c] = basis_increment(c, C);
        int64_t S = 0;
        if (basis == TL_BASIS_SQUARE) { /* sum P_t (+-2^15 or 0) = 2^15 sum +-P_t, exactly */
            sq[c] = tl_lls_square_proj(P, T, inc[c]);
            S = sq[c] * TL_BASIS_ONE;
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
    return n;
}

/* The early-exit confidence of hidden layer i's head: its prediction (-1 for a dead layer) and the
 * largest probability of its local softmax in Q16 (-1 for a dead layer).
 *
 * Why the maximum softmax probability and not the margin between the two largest logits: it is
 * the number the head's training already computes (the same softmax, whose argmax is local_pred,
 * so the exit answer is the layer's local prediction by construction), it lies in [1/classes, 1]
 * whatever the class count, tau or LLS-M modulation, so one threshold reads the same at every
 * layer and a threshold of 0.9 means "90% sure"; for two classes it is a monotone function of
 * the margin (p = 1 / (1 + exp(-margin))), so nothing is lost there. Q16 (65536 = 1.0) is the
 * Q24 probability rounded half up (>> 8): every layer, host and board, gets the same integer. */
tl_status tl_lls_head_confidence(const tl_model *m, int32_t i, const tl_arena *a, const int8_t *out,
                                 int32_t *pred, int32_t *conf_q16)
{
    uint32_t inc[TL_MAX_CLASSES];
    int32_t acoef[TL_MAX_CLASSES] = {0}, z[TL_MAX_CLASSES] = {0}, prob[TL_MAX_CLASSES];
    int64_t sq[TL_MAX_CLASSES];
    if (head_logits(m, i, a, out, inc, acoef, z, sq) == 0) {
        *pred = -1;
        *conf_q16 = -1;
        return TL_OK;
    }
    int32_t loss = -1;
    const int32_t best = softmax(z, m->classes, -1, prob, &loss);
    *pred = best;
    *conf_q16 = (prob[best] + 128) >> 8;
    return TL_OK;
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
    int64_t sq[TL_MAX_CLASSES]; /* the square basis' sum_t +-P_t per class, for g . h below */

    /* 1.-3. pool, normalise, project (head_logits) */
    const uint32_t n = head_logits(m, i, a, out, inc, acoef, z, sq);
    if (n == 0) {
        /* a dead layer (all outputs at the zero point) has no direction to learn from */
        *pred = -1;
        *loss_q16 = label >= 0 ? tl_ln_ratio_q16((uint64_t)C, 1) : -1;
        return TL_OK;
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
            const int64_t dm = tl_scale_update(grad, L->lls_m_lr_mult, L->lls_m_lr_shift, 0, m->cfg.rounding,
                                            tl_rand4(m->cfg.seed, m->step, 0x4D00u + (uint32_t)i, (uint32_t)k), NULL);
            L->lls_m[k] = (int32_t)TL_CLAMP((int64_t)L->lls_m[k] - dm, -(1 << 24), 1 << 24);
        }
    }
    /* 6. back through projection (g), normalisation (u): three passes over T so that only the
     *    pooled vector is stored; g is recomputed from the basis instead of being kept. */
    uint32_t ph[TL_MAX_CLASSES];
    /* a host keeps u_t (and on the square basis g_t) in the arena's fast buffers instead of
     * recomputing them; NULL where there are none */
    int64_t *const u_kept = tl_lls_u_buffer(a, T);
    int64_t *const g_kept = basis == TL_BASIS_SQUARE ? tl_lls_square_g(a, inc, w, C, T) : NULL;
    for (int32_t c = 0; c < C; c++)
        ph[c] = 0;
    int64_t gh = 0;
    if (basis == TL_BASIS_SQUARE) {
        /* g_t = sum_c +-w_c exactly (g_square), so sum_t g_t P_t = sum_c w_c sum_t +-P_t: the
         * projections of step 3 give it without a pass over T (the same integer; every partial
         * sum of either order is bounded by sum_c |w_c| sum_t |P_t|) */
        for (int32_t c = 0; c < C; c++)
            gh += (int64_t)w[c] * sq[c];
    } else {
        for (int32_t t = 0; t < T; t++)
            gh += (g_kept ? g_kept[t] : TL_G_AT(basis, bseed, inc, w, C, t, ph)) * P[t];
    }
    const tl_divisor dn = divisor_of(n);
    const int64_t gdot = div_round_by(gh, &dn); /* g . h^, Q24 */
    uint64_t umax = 0;
    /* |u_t| <= |g_t| + |gdot P_t / n| <= sum |w_c| + |gdot| (|P_t| <= n = floor(||P||)): when that
     * fits int32 (and no buffer keeps u_t) the second pass keeps u_t in place of P_t and the third
     * only scales it */
    int64_t wabs = gdot < 0 ? -gdot : gdot;
    for (int32_t c = 0; c < C; c++)
        wabs += w[c] < 0 ? -(int64_t)w[c] : w[c];
    const int keep = !u_kept && wabs <= INT32_MAX;
    for (int32_t c = 0; c < C; c++)
        ph[c] = 0;
    if (keep && !g_kept && basis == TL_BASIS_SQUARE) {
        /* the same loop without the per-element tests (a microcontroller's case: no buffers) */
        for (int32_t t = 0; t < T; t++) { /* keep: sum_c |w_c| <= INT32_MAX, so g_t fits int32 */
            const int64_t u = g_square32(inc, w, C, ph) - div_round_by(gdot * P[t], &dn);
            const uint64_t mag = u < 0 ? (uint64_t)(-u) : (uint64_t)u;
            umax = TL_MAX(umax, mag);
            P[t] = (int32_t)u;
        }
    } else {
        for (int32_t t = 0; t < T; t++) {
            const int64_t u =
                (g_kept ? g_kept[t] : TL_G_AT(basis, bseed, inc, w, C, t, ph)) - div_round_by(gdot * P[t], &dn);
            if (u_kept)
                u_kept[t] = u;
            const uint64_t mag = u < 0 ? (uint64_t)(-u) : (uint64_t)u;
            umax = TL_MAX(umax, mag);
            if (keep)
                P[t] = (int32_t)u;
        }
    }
    if (umax == 0)
        return TL_OK;
    const int32_t s = block_exponent(umax, n);
    const tl_divisor ds = divisor_of(s >= 0 ? (uint64_t)n : (uint64_t)n << -s);
    for (int32_t c = 0; c < C; c++)
        ph[c] = 0;
    if (keep) { /* u_t kept in P_t: the same scale_signal, one loop per sign of s */
        if (s >= 0) {
            for (int32_t t = 0; t < T; t++)
                P[t] = (int32_t)div_round_by((int64_t)P[t] * ((int64_t)1 << s), &ds);
        } else {
            for (int32_t t = 0; t < T; t++)
                P[t] = (int32_t)div_round_by(P[t], &ds);
        }
    } else {
        for (int32_t t = 0; t < T; t++) {
            const int64_t u = u_kept ? u_kept[t] : TL_G_AT(basis, bseed, inc, w, C, t, ph) - div_round_by(gdot * P[t], &dn);
            P[t] = (int32_t)div_round_by(s >= 0 ? u * ((int64_t)1 << s) : u, &ds); /* scale_signal; P_t no longer needed */
        }
    }
    /* 7. the update: real signal d 2^-(24+s) */
    tl_lls_update(m, i, a, in, out, 24 + s, 0, dw_preview, db_preview);
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
            z[c] = (int32_t)out[c] * 256;   /* not << 8: shifting a negative value is undefined in C */
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
    tl_lls_update(m, i, a, in, out, 24 + s, 1, dw_preview, db_preview);
    return TL_OK;
}
