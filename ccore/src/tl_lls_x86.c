/* The x86-64 path of LLS training (hosts): a hidden conv / depthwise layer's update, many output
 * channels at once, and the head's pooling and square-basis sums in vectors.
 *
 * tl_lls_update.c builds one output channel's delta map and correlates it with the input one
 * filter tap at a time: O(out_h * out_w) scratch, the right shape for a microcontroller, but on a
 * host every (channel, tap) pair is a scalar pass over the map. Here a block of TL_WIDE_C channels
 * gets its deltas at once (D, positions x channels, int16) and the gradient becomes integer
 * matrix products with AVX2's VPMADDWD (int16 x int16 pairs summed into int32):
 *   conv, 1x1 included:  G[c][n] = sum_p D[p][c] B[p][n],  B = im2col of (x - in_zp), 0 off the
 *                        image, column n = (fy, fx, j) - the weights' own layout;
 *   depthwise:           G[tap][c] = sum_p D[p][c] (x(tap(p), c) - in_zp) over the tap's valid
 *                        positions.
 * sum d (x - zp) is the integer tl_lls_update.c forms as sum d x - zp sum d, so the gradients, and
 * every weight after the update, are bit-identical to the per-channel path (tests pin it:
 * TL_FORCE_GENERIC builds take the per-channel path only).
 *
 * Bounds: |d| <= 32767 and |x - zp| <= 255, so a VPMADDWD lane (two products) is below
 * 2^24 and TL_WIDE_K pairs of them stay below 2^31 before they are flushed into int64.
 *
 * Also here, the rest of a host training step in vectors: the LLS head's pooling and its
 * square-basis projection and g_t, and the stochastic-rounding weight update (four lanes with
 * AVX2, eight with AVX-512). Where the CPU has AVX512-VNNI the inner products use VPDPWSSD.
 * Built only where tl_config.h sets TL_HOST_WIDE (x86-64 Linux hosts); AVX2 is checked at run
 * time and the callers fall back to the portable path without it. Each function computes the
 * same integers as the tl_lls.c / tl_lls_update.c code it replaces (tests/test_speed_paths.py).
 * Working buffers (~290 KB) come from the caller's arena (tl_arena.fast), not the stack. */
#include "tl_lls.h"
#include "tl_x86.h"

#if TL_HOST_WIDE

#define TL_WIDE_K 64 /* position pairs per int32 block: 64 * 2 * 32767 * 255 < 2^31 */

int tl_wide_usable(const tl_layer *L)
{
    if (!tl_x86_avx2() || L->out_c % 8 != 0) /* whole 8-channel groups */
        return 0;
    if (L->kind != TL_LAYER_CONV && L->kind != TL_LAYER_DWCONV)
        return 0;
    if (L->act == TL_ACT_LEAKY || L->pool < 1 || L->pool * L->pool > TL_WIDE_MAX_CELLS || L->out_h % L->pool ||
        L->out_w % L->pool)
        return 0;
    if (L->out_h * L->out_w > TL_WIDE_MAX_P)
        return 0;
    return L->kind == TL_LAYER_CONV || L->k_h * L->k_w <= TL_WIDE_N; /* depthwise G: taps x TL_WIDE_C */
}

/* D[p][cc] = f'(h) * v0 of p's pooling cell, for channels c0 + cc, cc < nc (lanes >= nc are 0);
 * bsum[cc] = sum_p D[p][cc], any[cc] = whether some D[p][cc] != 0. v0 is [cell][TL_WIDE_C].
 * Eight channels per SSE vector; a cell's bias sum is v0 times its count of open positions. */
static TL_AVX2 void tl_wide_deltas(const tl_layer *L, const int8_t *out, int32_t c0, int32_t nc, const int16_t *v0,
                            int16_t *D, int64_t *bsum, int32_t *any)
{
    const int32_t oh = L->out_h, ow = L->out_w, oc = L->out_c, p = L->pool;
    const int32_t bh = oh / p, bw = ow / p, groups = (nc + 7) / 8;
    const __m128i lo = _mm_set1_epi16((int16_t)L->act_min), hi = _mm_set1_epi16((int16_t)L->act_max);
    int64_t sum[TL_WIDE_C] = {0};
    __m128i orv[2] = {_mm_setzero_si128(), _mm_setzero_si128()};
    if (groups < 2) /* nc == 8: the upper lanes stay 0 */
        for (int32_t k = 0; k < oh * ow; k++)
            _mm_storeu_si128((__m128i *)(D + k * TL_WIDE_C + 8), _mm_setzero_si128());
    for (int32_t cy = 0; cy < p; cy++) {
        for (int32_t cx = 0; cx < p; cx++) {
            const int16_t *v = v0 + (cy * p + cx) * TL_WIDE_C;
            for (int32_t g = 0; g < groups; g++) {
                const __m128i vg = _mm_loadu_si128((const __m128i *)(v + 8 * g));
                __m128i cnt = _mm_setzero_si128(); /* open positions of the cell, per channel */
                for (int32_t oy = cy * bh; oy < (cy + 1) * bh; oy++) {
                    for (int32_t ox = cx * bw; ox < (cx + 1) * bw; ox++) {
                        const int8_t *h = out + (oy * ow + ox) * oc + c0 + 8 * g;
                        const __m128i hv = _mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)h));
                        const __m128i on = _mm_and_si128(_mm_cmpgt_epi16(hv, lo), _mm_cmplt_epi16(hv, hi));
                        const __m128i d = _mm_and_si128(on, vg);
                        _mm_storeu_si128((__m128i *)(D + (oy * ow + ox) * TL_WIDE_C + 8 * g), d);
                        cnt = _mm_sub_epi16(cnt, on); /* <= TL_WIDE_MAX_P / cells < 2^15 */
                        orv[g] = _mm_or_si128(orv[g], d);
                    }
                }
                int16_t cv[8], vv[8];
                _mm_storeu_si128((__m128i *)cv, cnt);
                _mm_storeu_si128((__m128i *)vv, vg);
                for (int32_t q = 0; q < 8; q++)
                    sum[8 * g + q] += (int64_t)vv[q] * cv[q];
            }
        }
    }
    int16_t o[16];
    _mm_storeu_si128((__m128i *)o, orv[0]);
    _mm_storeu_si128((__m128i *)(o + 8), orv[1]);
    for (int32_t cc = 0; cc < TL_WIDE_C; cc++) {
        bsum[cc] = cc < nc ? sum[cc] : 0;
        any[cc] = cc < nc && o[cc] != 0;
    }
}

/* ---------------------------------------------------------------- conv: G = D^T B */
/* Row p of B, columns [n0, n0 + nn), as int16, zero-padded to a multiple of 16 columns. */
static TL_AVX2 void im2col_row(const tl_layer *L, const int8_t *in, int32_t oy, int32_t ox, int32_t n0, int32_t nn,
                               int16_t *row)
{
    const int32_t ic = L->in_c, zp = L->in_zp;
    const int32_t nn16 = (nn + 15) & ~15;
    if (L->k_h == 1 && L->k_w == 1 && L->pad_top == 0 && L->pad_left == 0) {
        const int8_t *x = in + ((oy * L->stride_h) * L->in_w + ox * L->stride_w) * ic + n0;
        const __m128i z = _mm_set1_epi16((int16_t)zp);
        int32_t n = 0;
        for (; n + 8 <= nn; n += 8)
            _mm_storeu_si128((__m128i *)(row + n),
                             _mm_sub_epi16(_mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)(x + n))), z));
        for (; n < nn; n++)
            row[n] = (int16_t)(x[n] - zp);
    } else if (n0 == 0 && nn == L->k_h * L->k_w * ic) {
        /* the whole row: one run of k_w * ic input bytes per filter row when it lies on the image */
        const int32_t run = L->k_w * ic, ix0 = ox * L->stride_w - L->pad_left;
        const __m128i z = _mm_set1_epi16((int16_t)zp);
        for (int32_t fy = 0; fy < L->k_h; fy++) {
            const int32_t iy = oy * L->stride_h + fy - L->pad_top;
            int16_t *dst = row + fy * run;
            if (iy < 0 || iy >= L->in_h) {
                for (int32_t k = 0; k < run; k++)
                    dst[k] = 0;
            } else if (ix0 >= 0 && ix0 + L->k_w <= L->in_w) {
                const int8_t *x = in + (iy * L->in_w + ix0) * ic;
                int32_t k = 0;
                for (; k + 8 <= run; k += 8)
                    _mm_storeu_si128((__m128i *)(dst + k),
                                     _mm_sub_epi16(_mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)(x + k))), z));
                for (; k < run; k++)
                    dst[k] = (int16_t)(x[k] - zp);
            } else {
                for (int32_t fx = 0; fx < L->k_w; fx++) {
                    const int32_t ix = ix0 + fx;
                    const int on = ix >= 0 && ix < L->in_w;
                    for (int32_t j = 0; j < ic; j++)
                        dst[fx * ic + j] = on ? (int16_t)(in[(iy * L->in_w + ix) * ic + j] - zp) : 0;
                }
            }
        }
    } else {
        /* columns n0.. walk the taps (fy, fx) in order, ic channels each */
        int32_t tap = n0 / ic, j = n0 - tap * ic;
        for (int32_t n = 0; n < nn; tap++, j = 0) {
            const int32_t iy = oy * L->stride_h + tap / L->k_w - L->pad_top;
            const int32_t ix = ox * L->stride_w + tap % L->k_w - L->pad_left;
            const int32_t m = TL_MIN(ic - j, nn - n);
            if (iy >= 0 && iy < L->in_h && ix >= 0 && ix < L->in_w) {
                const int8_t *x = in + (iy * L->in_w + ix) * ic + j;
                for (int32_t k = 0; k < m; k++)
                    row[n + k] = (int16_t)(x[k] - zp);
            } else {
                for (int32_t k = 0; k < m; k++)
                    row[n + k] = 0;
            }
            n += m;
        }
    }
    for (int32_t n = nn; n < nn16; n++)
        row[n] = 0;
}

/* Pair k of B (positions 2k, 2k + 1, the second 0 past the end): lane n of dst holds the int16
 * pair (B[2k][n0 + n], B[2k + 1][n0 + n]), n < nn rounded up to 16 (zeros). */
static TL_AVX2 void pack_pair(const tl_layer *L, const int8_t *in, int32_t k, int32_t n0, int32_t nn, int32_t *dst)
{
    const int32_t ow = L->out_w, P = L->out_h * L->out_w, nn16 = (nn + 15) & ~15;
    const int32_t pa = 2 * k, pb = pa + 1;
    int16_t rowa[TL_WIDE_N], rowb[TL_WIDE_N];
    im2col_row(L, in, pa / ow, pa % ow, n0, nn, rowa);
    if (pb < P)
        im2col_row(L, in, pb / ow, pb % ow, n0, nn, rowb);
    else
        for (int32_t n = 0; n < nn16; n++)
            rowb[n] = 0;
    for (int32_t n = 0; n < nn16; n += 8) {
        const __m128i a = _mm_loadu_si128((const __m128i *)(rowa + n));
        const __m128i b = _mm_loadu_si128((const __m128i *)(rowb + n));
        _mm_store_si128((__m128i *)(dst + n), _mm_unpacklo_epi16(a, b));
        _mm_store_si128((__m128i *)(dst + n + 4), _mm_unpackhi_epi16(a, b));
    }
}

/* B packed once for every position pair (stride: nn rounded up to 16), for layers whose output
 * channels span several blocks: each block's tl_wide_conv_grad then reads it. */
static TL_AVX2 void tl_wide_pack_b(const tl_layer *L, const int8_t *in, int32_t n0, int32_t nn, int32_t *Ball)
{
    const int32_t pairs = (L->out_h * L->out_w + 1) / 2, nn16 = (nn + 15) & ~15;
    for (int32_t k = 0; k < pairs; k++)
        pack_pair(L, in, k, n0, nn, Ball + k * nn16);
}

/* G[cc][n] = sum_p D[p][cc] B[p][n0 + n] for the block's 16 channels; B from Ball when given
 * (tl_wide_pack_b), else packed here TL_WIDE_K pairs at a time. */
static TL_AVX2 void tl_wide_conv_grad(const tl_layer *L, const int8_t *in, const int16_t *D, const int32_t *Ball,
                               int32_t n0, int32_t nn, int64_t *G)
{
    const int32_t P = L->out_h * L->out_w;
    const int32_t nn16 = (nn + 15) & ~15;
    const int32_t bs = Ball ? nn16 : TL_WIDE_N; /* stride of a pair's row in B */
    int32_t Bk[TL_WIDE_K * TL_WIDE_N] __attribute__((aligned(32)));  /* (pair, column) int16 pairs */
    int32_t Dp[TL_WIDE_K * TL_WIDE_C] __attribute__((aligned(32)));  /* (pair, channel) int16 pairs */
    const int vnni = tl_x86_vnni();
    for (int32_t k = 0; k < TL_WIDE_C * nn; k++)
        G[k] = 0;
    for (int32_t p0 = 0; p0 < P; p0 += 2 * TL_WIDE_K) {
        const int32_t npos = TL_MIN(2 * TL_WIDE_K, P - p0), kp = (npos + 1) / 2;
        const int32_t *Bp = Ball ? Ball + (p0 / 2) * bs : Bk;
        for (int32_t k = 0; k < kp; k++) {
            const int32_t pa = p0 + 2 * k, pb = pa + 1;
            if (!Ball)
                pack_pair(L, in, pa / 2, n0, nn, Bk + k * TL_WIDE_N);
            const __m256i da = _mm256_loadu_si256((const __m256i *)(D + pa * TL_WIDE_C));
            const __m256i db = pb < P ? _mm256_loadu_si256((const __m256i *)(D + pb * TL_WIDE_C))
                                      : _mm256_setzero_si256();
            /* unpack works per 128-bit lane: lo holds channels 0-3 | 8-11, hi 4-7 | 12-15 */
            const __m256i lo = _mm256_unpacklo_epi16(da, db), hi = _mm256_unpackhi_epi16(da, db);
            _mm256_store_si256((__m256i *)(Dp + k * TL_WIDE_C), _mm256_permute2x128_si256(lo, hi, 0x20));
            _mm256_store_si256((__m256i *)(Dp + k * TL_WIDE_C + 8), _mm256_permute2x128_si256(lo, hi, 0x31));
        }
        /* 4 channels x 16 columns per tile: 8 accumulators, 2 loads + 4 broadcasts per pair */
        for (int32_t cb = 0; cb < TL_WIDE_C; cb += 4) {
            for (int32_t nb = 0; nb < nn16; nb += 16) {
                __m256i a00 = _mm256_setzero_si256(), a01 = a00, a10 = a00, a11 = a00;
                __m256i a20 = a00, a21 = a00, a30 = a00, a31 = a00;
                for (int32_t k = 0; k < kp; k++) {
                    const int32_t *bk = Bp + k * bs + nb, *dk = Dp + k * TL_WIDE_C + cb;
                    const __m256i b0 = _mm256_loadu_si256((const __m256i *)bk);
                    const __m256i b1 = _mm256_loadu_si256((const __m256i *)(bk + 8));
                    __m256i d = _mm256_set1_epi32(dk[0]);
                    a00 = tl_dot_acc(a00, d, b0, vnni);
                    a01 = tl_dot_acc(a01, d, b1, vnni);
                    d = _mm256_set1_epi32(dk[1]);
                    a10 = tl_dot_acc(a10, d, b0, vnni);
                    a11 = tl_dot_acc(a11, d, b1, vnni);
                    d = _mm256_set1_epi32(dk[2]);
                    a20 = tl_dot_acc(a20, d, b0, vnni);
                    a21 = tl_dot_acc(a21, d, b1, vnni);
                    d = _mm256_set1_epi32(dk[3]);
                    a30 = tl_dot_acc(a30, d, b0, vnni);
                    a31 = tl_dot_acc(a31, d, b1, vnni);
                }
                int32_t t[4][16] __attribute__((aligned(32)));
                _mm256_store_si256((__m256i *)t[0], a00);
                _mm256_store_si256((__m256i *)(t[0] + 8), a01);
                _mm256_store_si256((__m256i *)t[1], a10);
                _mm256_store_si256((__m256i *)(t[1] + 8), a11);
                _mm256_store_si256((__m256i *)t[2], a20);
                _mm256_store_si256((__m256i *)(t[2] + 8), a21);
                _mm256_store_si256((__m256i *)t[3], a30);
                _mm256_store_si256((__m256i *)(t[3] + 8), a31);
                for (int32_t r = 0; r < 4; r++) {
                    int64_t *g = G + (cb + r) * nn + nb;
                    const int32_t m = TL_MIN(16, nn - nb);
                    for (int32_t n = 0; n < m; n++)
                        g[n] += t[r][n];
                }
            }
        }
    }
}

/* One tap's gradient for a full block of 16 channels, one 256-bit vector per position pair:
 * unpack works per 128-bit lane, so lo collects channels 0-3 | 8-11 and hi 4-7 | 12-15. */
static TL_AVX2 void dw_tap16(const tl_layer *L, const int8_t *in, const int16_t *D, int32_t c0, int32_t oy0,
                             int32_t oy1, int32_t ox0, int32_t ox1, int32_t yo, int32_t xo, int64_t *g)
{
    static const int8_t lane_lo[8] = {0, 1, 2, 3, 8, 9, 10, 11}, lane_hi[8] = {4, 5, 6, 7, 12, 13, 14, 15};
    const int32_t ow = L->out_w, ic = L->in_c, iw = L->in_w, sh = L->stride_h, sw = L->stride_w;
    const __m256i zp = _mm256_set1_epi16((int16_t)L->in_zp);
    __m256i acc_lo = _mm256_setzero_si256(), acc_hi = acc_lo;
    int64_t tot[TL_WIDE_C] = {0};
    int32_t pairs = 0, t_lo[8], t_hi[8];
    for (int32_t oy = oy0; oy < oy1; oy++) {
        const int8_t *xrow = in + ((oy * sh + yo) * iw) * ic + c0;
        const int16_t *drow = D + oy * ow * TL_WIDE_C;
        for (int32_t ox = ox0; ox < ox1; ox += 2) {
            const int last = ox + 1 >= ox1;
            const int8_t *x0p = xrow + (ox * sw + xo) * ic;
            const __m256i d0 = _mm256_loadu_si256((const __m256i *)(drow + ox * TL_WIDE_C));
            const __m256i d1 = last ? _mm256_setzero_si256()
                                    : _mm256_loadu_si256((const __m256i *)(drow + (ox + 1) * TL_WIDE_C));
            const __m256i x0 = _mm256_sub_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x0p)), zp);
            const __m256i x1 = last ? _mm256_setzero_si256()
                                    : _mm256_sub_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(x0p + sw * ic))), zp);
            acc_lo = _mm256_add_epi32(acc_lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(d0, d1), _mm256_unpacklo_epi16(x0, x1)));
            acc_hi = _mm256_add_epi32(acc_hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(d0, d1), _mm256_unpackhi_epi16(x0, x1)));
            if (++pairs == TL_WIDE_K) {
                _mm256_storeu_si256((__m256i *)t_lo, acc_lo);
                _mm256_storeu_si256((__m256i *)t_hi, acc_hi);
                for (int32_t q = 0; q < 8; q++) {
                    tot[lane_lo[q]] += t_lo[q];
                    tot[lane_hi[q]] += t_hi[q];
                }
                acc_lo = acc_hi = _mm256_setzero_si256();
                pairs = 0;
            }
        }
    }
    _mm256_storeu_si256((__m256i *)t_lo, acc_lo);
    _mm256_storeu_si256((__m256i *)t_hi, acc_hi);
    for (int32_t q = 0; q < 8; q++) {
        g[lane_lo[q]] = tot[lane_lo[q]] + t_lo[q];
        g[lane_hi[q]] = tot[lane_hi[q]] + t_hi[q];
    }
}

/* ---------------------------------------------------------------- depthwise */
/* G[tap * TL_WIDE_C + cc] for the 8-channel groups of the block (nc a multiple of 8). */
static TL_AVX2 void tl_wide_dw_grad(const tl_layer *L, const int8_t *in, const int16_t *D,
                                                     int32_t c0, int32_t nc, int64_t *G)
{
    const int32_t ow = L->out_w, oh = L->out_h, ic = L->in_c, iw = L->in_w, ih = L->in_h;
    const int32_t sh = L->stride_h, sw = L->stride_w;
    const __m128i zp = _mm_set1_epi16((int16_t)L->in_zp);
    for (int32_t k = 0; k < L->k_h * L->k_w * TL_WIDE_C; k++)
        G[k] = 0;
    for (int32_t fy = 0; fy < L->k_h; fy++) {
        const int32_t yo = fy - L->pad_top;
        /* output rows whose tap row lies on the image: 0 <= oy sh + yo < ih */
        const int32_t oy0 = TL_MIN(oh, yo >= 0 ? 0 : (-yo + sh - 1) / sh);
        const int32_t oy1 = TL_MAX(oy0, TL_MIN(oh, ih - 1 - yo < 0 ? 0 : (ih - 1 - yo) / sh + 1));
        for (int32_t fx = 0; fx < L->k_w; fx++) {
            const int32_t xo = fx - L->pad_left;
            const int32_t ox0 = TL_MIN(ow, xo >= 0 ? 0 : (-xo + sw - 1) / sw);
            const int32_t ox1 = TL_MAX(ox0, TL_MIN(ow, iw - 1 - xo < 0 ? 0 : (iw - 1 - xo) / sw + 1));
            int64_t *g = G + (fy * L->k_w + fx) * TL_WIDE_C;
            if (nc == TL_WIDE_C) {
                dw_tap16(L, in, D, c0, oy0, oy1, ox0, ox1, yo, xo, g);
                continue;
            }
            for (int32_t cg = 0; cg < nc; cg += 8) {
                __m128i acc_lo = _mm_setzero_si128(), acc_hi = acc_lo;
                int32_t pairs = 0;
                int64_t tot[8] = {0};
                for (int32_t oy = oy0; oy < oy1; oy++) {
                    const int8_t *xrow = in + ((oy * sh + yo) * iw) * ic + c0 + cg;
                    const int16_t *drow = D + oy * ow * TL_WIDE_C + cg;
                    for (int32_t ox = ox0; ox < ox1; ox += 2) {
                        const int last = ox + 1 >= ox1;
                        const __m128i d0 = _mm_loadu_si128((const __m128i *)(drow + ox * TL_WIDE_C));
                        const __m128i d1 = last ? _mm_setzero_si128()
                                                : _mm_loadu_si128((const __m128i *)(drow + (ox + 1) * TL_WIDE_C));
                        const int8_t *x0p = xrow + ((ox * sw + xo) * ic);
                        const __m128i x0 = _mm_sub_epi16(_mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)x0p)), zp);
                        const __m128i x1 = last ? _mm_setzero_si128()
                                                : _mm_sub_epi16(_mm_cvtepi8_epi16(_mm_loadl_epi64(
                                                                    (const __m128i *)(x0p + sw * ic))), zp);
                        acc_lo = _mm_add_epi32(acc_lo, _mm_madd_epi16(_mm_unpacklo_epi16(d0, d1),
                                                                      _mm_unpacklo_epi16(x0, x1)));
                        acc_hi = _mm_add_epi32(acc_hi, _mm_madd_epi16(_mm_unpackhi_epi16(d0, d1),
                                                                      _mm_unpackhi_epi16(x0, x1)));
                        if (++pairs == TL_WIDE_K) {
                            int32_t t[8];
                            _mm_storeu_si128((__m128i *)t, acc_lo);
                            _mm_storeu_si128((__m128i *)(t + 4), acc_hi);
                            for (int32_t q = 0; q < 8; q++)
                                tot[q] += t[q];
                            acc_lo = acc_hi = _mm_setzero_si128();
                            pairs = 0;
                        }
                    }
                }
                int32_t t[8];
                _mm_storeu_si128((__m128i *)t, acc_lo);
                _mm_storeu_si128((__m128i *)(t + 4), acc_hi);
                for (int32_t q = 0; q < 8; q++)
                    g[cg + q] = tot[q] + t[q];
            }
        }
    }
}
/* ---------------------------------------------------------------- LLS head pooling */
/* tl_train_hidden's P_t = sum over cell (h - zp), channel-major t = c p^2 + cell, with the
 * channels contiguous in the inner loop: sums per (cell, channel) in int32 lanes first.
 * T = out_c p^2 <= TL_LLS_MAX_T (the caller checks: a pool of 1 may exceed it). */
TL_AVX2 void tl_wide_pool(const tl_layer *L, const int8_t *out, int32_t *P)
{
    const int32_t oh = L->out_h, ow = L->out_w, oc = L->out_c, p = L->pool, pp = p * p;
    const int32_t bh = oh / p, bw = ow / p;
    int32_t acc[TL_LLS_MAX_T] __attribute__((aligned(32)));
    for (int32_t k = 0; k < pp * oc; k++)
        acc[k] = 0;
    for (int32_t oy = 0; oy < oh; oy++) {
        for (int32_t ox = 0; ox < ow; ox++) {
            int32_t *a = acc + ((oy / bh) * p + ox / bw) * oc;
            const int8_t *h = out + (oy * ow + ox) * oc;
            int32_t c = 0;
            for (; c + 8 <= oc; c += 8)
                _mm256_storeu_si256((__m256i *)(a + c),
                                    _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)(a + c)),
                                                     _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(h + c)))));
            for (; c < oc; c++)
                a[c] += h[c];
        }
    }
    const int32_t zsum = bh * bw * L->out_zp;
    for (int32_t cell = 0; cell < pp; cell++)
        for (int32_t c = 0; c < oc; c++)
            P[c * pp + cell] = acc[cell * oc + c] - zsum;
}

/* ---------------------------------------------------------------- the weight update */
/* apply_x4 with AVX-512: eight weights per vector, native 64-bit arithmetic shifts, min/max
 * and a saturating int64 -> int8 store. */
static TL_AVX512 int32_t apply_x8(int8_t *weights, const int64_t *acc, int32_t n, int32_t idx0, int32_t mult,
                                   int32_t r, int32_t psh, int nearest, uint32_t prefix)
{
    const __m512i m = _mm512_set1_epi64(mult);
    const __m128i rs = _mm_cvtsi32_si128(r), pres = _mm_cvtsi32_si128(psh);
    const __m128i tops = _mm_cvtsi32_si128(r >= 32 ? r - 32 : 32 - r);
    const __m512i lo32 = _mm512_set1_epi64(0xFFFFFFFFll);
    const __m512i wmax = _mm512_set1_epi64(127), wmin = _mm512_set1_epi64(-127);
    const __m512i amax = _mm512_set1_epi64(INT32_MAX), amin = _mm512_set1_epi64(-INT32_MAX);
    const __m512i step = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
    const __m512i c1 = _mm512_set1_epi32((int32_t)0x85EBCA6Bu), c2 = _mm512_set1_epi32((int32_t)0xC2B2AE35u);
    const __m512i pre = _mm512_set1_epi64(prefix);
    const int32_t n8 = n & ~7;
    int32_t k = 0;
    for (; k < n8; k += 8) {
        const __m512i a = _mm512_loadu_si512((const void *)(acc + k));
        if (_mm512_cmpgt_epi64_mask(a, amax) | _mm512_cmpgt_epi64_mask(amin, a))
            break;
        const __m512i prod = _mm512_sra_epi64(_mm512_mul_epi32(a, m), pres); /* floor(a mult / 2^psh) */
        const __m512i fl = _mm512_sra_epi64(prod, rs);
        const __m512i top = _mm512_and_si512(r >= 32 ? _mm512_srl_epi64(prod, tops) : _mm512_sll_epi64(prod, tops), lo32);
        __m512i rnd;
        if (nearest) {
            rnd = _mm512_set1_epi64(0x7FFFFFFF);
        } else {
            __m512i h = _mm512_and_si512(_mm512_xor_si512(pre, _mm512_add_epi64(_mm512_set1_epi64((uint32_t)(idx0 + k)), step)), lo32);
            h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 16));
            h = _mm512_and_si512(_mm512_mullo_epi32(h, c1), lo32);
            h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 13));
            h = _mm512_and_si512(_mm512_mullo_epi32(h, c2), lo32);
            rnd = _mm512_xor_si512(h, _mm512_srli_epi32(h, 16));
        }
        const __m512i dw = _mm512_mask_add_epi64(fl, _mm512_cmpgt_epi64_mask(top, rnd), fl, _mm512_set1_epi64(1));
        __m512i w = _mm512_cvtepi8_epi64(_mm_loadl_epi64((const __m128i *)(weights + idx0 + k)));
        w = _mm512_min_epi64(_mm512_max_epi64(_mm512_sub_epi64(w, dw), wmin), wmax);
        _mm_storel_epi64((__m128i *)(weights + idx0 + k), _mm512_cvtsepi64_epi8(w));
    }
    return k;
}

/* tl_upd_apply_row's fast path four weights per vector (AVX2), for n contiguous weights, a
 * rounding shift r in [1, 62] and a multiplier in [0, 2^31), as long as |acc| < 2^31: w -= floor(acc mult / 2^r) + (rnd < the top 32 fraction bits), then
 * saturated to [-127, 127]; rnd = tl_mix32(prefix ^ idx), or 2^31 - 1 for round-to-nearest.
 * psh > 0 is tl_scale_update's rounding shift above 62 (r = 62 + psh): the product is first
 * floored by 2^psh (its `prod >>= r - 62`), then rounded at r = 62 as above; psh in [0, 63].
 * 64-bit lanes throughout (AVX2 has no 64-bit arithmetic shift: floor(x / 2^r) is computed as
 * s ^ ((x ^ s) >> r) with s the sign mask). Returns how many weights it did: a multiple of 4,
 * stopping before the first group holding a gradient outside (-2^31, 2^31). */
static TL_AVX2 int32_t apply_x4(int8_t *weights, const int64_t *acc, int32_t n, int32_t idx0, int32_t mult, int32_t r,
                                 int32_t psh, int nearest, uint32_t prefix)
{
    const __m256i m = _mm256_set1_epi64x(mult), zero = _mm256_setzero_si256();
    const __m128i rs = _mm_cvtsi32_si128(r), pres = _mm_cvtsi32_si128(psh);
    const __m128i tops = _mm_cvtsi32_si128(r >= 32 ? r - 32 : 32 - r);
    const __m256i lo32 = _mm256_set1_epi64x(0xFFFFFFFFll);
    const __m256i wmax = _mm256_set1_epi64x(127), wmin = _mm256_set1_epi64x(-127);
    const __m256i step = _mm256_set_epi64x(3, 2, 1, 0);
    const __m256i c1 = _mm256_set1_epi32((int32_t)0x85EBCA6Bu), c2 = _mm256_set1_epi32((int32_t)0xC2B2AE35u);
    const __m256i pre = _mm256_set1_epi64x(prefix);
    const __m256i amax = _mm256_set1_epi64x(INT32_MAX), amin = _mm256_set1_epi64x(-INT32_MAX);
    const int32_t n4 = n & ~3;
    int32_t k = 0;
    for (; k < n4; k += 4) {
        const __m256i a = _mm256_loadu_si256((const __m256i *)(acc + k));
        if (!_mm256_testz_si256(_mm256_or_si256(_mm256_cmpgt_epi64(a, amax), _mm256_cmpgt_epi64(amin, a)),
                                _mm256_set1_epi64x(-1)))
            break; /* tl_upd_apply_row's tl_scale_update path takes it from here */
        const __m256i p0 = _mm256_mul_epi32(a, m);
        const __m256i s = _mm256_cmpgt_epi64(zero, p0); /* prod's sign: the pre-shift keeps it */
        const __m256i prod = _mm256_xor_si256(_mm256_srl_epi64(_mm256_xor_si256(p0, s), pres), s);
        const __m256i fl = _mm256_xor_si256(_mm256_srl_epi64(_mm256_xor_si256(prod, s), rs), s);
        const __m256i top = _mm256_and_si256(r >= 32 ? _mm256_srl_epi64(prod, tops) : _mm256_sll_epi64(prod, tops), lo32);
        __m256i rnd;
        if (nearest) {
            rnd = _mm256_set1_epi64x(0x7FFFFFFF);
        } else { /* tl_mix32 on 32-bit values held in 64-bit lanes (upper halves stay 0) */
            __m256i h = _mm256_xor_si256(pre, _mm256_add_epi64(_mm256_set1_epi64x((uint32_t)(idx0 + k)), step));
            h = _mm256_and_si256(h, lo32);
            h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 16));
            h = _mm256_and_si256(_mm256_mullo_epi32(h, c1), lo32);
            h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 13));
            h = _mm256_and_si256(_mm256_mullo_epi32(h, c2), lo32);
            rnd = _mm256_xor_si256(h, _mm256_srli_epi32(h, 16));
        }
        const __m256i dw = _mm256_sub_epi64(fl, _mm256_cmpgt_epi64(top, rnd)); /* + 1 where rnd < top */
        int32_t w4;
        __builtin_memcpy(&w4, weights + idx0 + k, 4);
        __m256i w = _mm256_sub_epi64(_mm256_cvtepi8_epi64(_mm_cvtsi32_si128(w4)), dw);
        w = _mm256_blendv_epi8(w, wmax, _mm256_cmpgt_epi64(w, wmax));
        w = _mm256_blendv_epi8(w, wmin, _mm256_cmpgt_epi64(wmin, w));
        const __m256i lo = _mm256_permutevar8x32_epi32(w, _mm256_set_epi32(7, 5, 3, 1, 6, 4, 2, 0));
        const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(lo), _mm256_castsi256_si128(lo));
        w4 = _mm_cvtsi128_si32(_mm_packs_epi16(w16, w16));
        __builtin_memcpy(weights + idx0 + k, &w4, 4);
    }
    return k;
}
/* The weight update of n contiguous weights at rounding shift r in [1, 125]: eight per vector
 * where the CPU has AVX-512, then four per vector; returns how many it did (the caller finishes
 * the rest, as apply_x4 says). */
static TL_AVX2 int32_t tl_wide_apply(int8_t *weights, const int64_t *acc, int32_t n, int32_t idx0, int32_t mult, int32_t r,
                              int nearest, uint32_t prefix)
{
    const int32_t psh = r > 62 ? r - 62 : 0;
    r -= psh;
    int32_t done = 0;
    if (tl_x86_avx512()) {
        done = apply_x8(weights, acc, n, idx0, mult, r, psh, nearest, prefix);
        if (done < (n & ~7))
            return done; /* stopped before a gradient outside (-2^31, 2^31) */
    }
    return done + apply_x4(weights, acc + done, n - done, idx0 + done, mult, r, psh, nearest, prefix);
}

/* ---------------------------------------------------------------- LLS head, square basis */
static inline TL_AVX2 __m256i add_s32_as_s64(__m256i acc, __m256i v)
{
    acc = _mm256_add_epi64(acc, _mm256_cvtepi32_epi64(_mm256_castsi256_si128(v)));
    return _mm256_add_epi64(acc, _mm256_cvtepi32_epi64(_mm256_extracti128_si256(v, 1)));
}

static inline TL_AVX2 int64_t hsum_s64(__m256i v)
{
    int64_t t[4];
    _mm256_storeu_si256((__m256i *)t, v);
    return t[0] + t[1] + t[2] + t[3];
}

/* x, -x or 0 by the square wave's phase ph = inc t (mod 2^32): -x in the second half-turn, 0 at
 * the two zero crossings (ph = 0 or 2^31), as tl_lls.c's basis_value. */
static inline TL_AVX2 __m256i square_sel(__m256i x, __m256i ph)
{
    const __m256i sign = _mm256_srai_epi32(ph, 31);
    const __m256i v = _mm256_sub_epi32(_mm256_xor_si256(x, sign), sign);
    return _mm256_andnot_si256(_mm256_cmpeq_epi32(_mm256_slli_epi32(ph, 1), _mm256_setzero_si256()), v);
}

/* tl_train_hidden's square-basis projection sum_t (+-P_t or 0), eight t per vector. */
TL_AVX2 int64_t tl_wide_square_proj(const int32_t *P, int32_t T, uint32_t inc)
{
    const __m256i step = _mm256_set1_epi32((int32_t)(inc * 8u));
    __m256i ph = _mm256_mullo_epi32(_mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0), _mm256_set1_epi32((int32_t)inc));
    __m256i acc = _mm256_setzero_si256();
    int32_t t = 0;
    for (; t + 8 <= T; t += 8, ph = _mm256_add_epi32(ph, step))
        acc = add_s32_as_s64(acc, square_sel(_mm256_loadu_si256((const __m256i *)(P + t)), ph));
    int64_t S = hsum_s64(acc);
    for (; t < T; t++) {
        const uint32_t q = inc * (uint32_t)t;
        const int32_t v = (q & 0x80000000u) ? -P[t] : P[t];
        S += (q << 1) ? v : 0;
    }
    return S;
}

/* g_t = sum_c (+-w_c or 0) for t < T (tl_lls.c's g_at on the square basis), eight t at a time;
 * every |w_c| <= INT32_MAX / 2 (tl_train_hidden clamps them), so each selected term fits int32. */
TL_AVX2 void tl_wide_square_g(const uint32_t *inc, const int32_t *w, int32_t C, int32_t T, int64_t *g)
{
    const __m256i lanes = _mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0);
    int32_t t = 0;
    for (; t + 8 <= T; t += 8) {
        const __m256i tv = _mm256_add_epi32(lanes, _mm256_set1_epi32(t));
        __m256i lo = _mm256_setzero_si256(), hi = lo;
        for (int32_t c = 0; c < C; c++) {
            const __m256i v = square_sel(_mm256_set1_epi32(w[c]), _mm256_mullo_epi32(tv, _mm256_set1_epi32((int32_t)inc[c])));
            lo = _mm256_add_epi64(lo, _mm256_cvtepi32_epi64(_mm256_castsi256_si128(v)));
            hi = _mm256_add_epi64(hi, _mm256_cvtepi32_epi64(_mm256_extracti128_si256(v, 1)));
        }
        _mm256_storeu_si256((__m256i *)(g + t), lo);
        _mm256_storeu_si256((__m256i *)(g + t + 4), hi);
    }
    for (; t < T; t++) {
        int64_t s = 0;
        for (int32_t c = 0; c < C; c++) {
            const uint32_t q = inc[c] * (uint32_t)t;
            const int32_t wc = (q & 0x80000000u) ? -w[c] : w[c];
            s += (q << 1) ? wc : 0;
        }
        g[t] = s;
    }
}
/* ---------------------------------------------------------------- one layer */
/* tl_upd_apply_row over n contiguous weights, four per vector through tl_wide_apply where its
 * preconditions hold (no preview, r in [1, 125]: above 62 tl_scale_update's pre-shift, which C
 * defines for r - 62 < 64), whatever it leaves by tl_upd_apply_row. */
static void apply_row_wide(const tl_upd_row *u, const int64_t *acc, int32_t n, int32_t idx0)
{
    const int32_t r = 31 + u->Ec - u->ws;
    int32_t done = 0;
    if (!u->dw_preview && r >= 1 && r <= 62 + 63 && u->wm >= 0)
        done = tl_wide_apply(u->weights, acc, n, idx0, u->wm, r, u->rounding == TL_ROUND_NEAREST, u->prefix);
    tl_upd_apply_row(u, acc + done, n - done, idx0 + done, 1);
}

/* tl_upd_apply_row of one weight (a depthwise tap: every channel has its own scale): its
 * branch-free rounding, also for r in (62, 125] with tl_scale_update's pre-shift (floor by
 * 2^(r - 62), then r = 62), where tl_upd_apply_row would call tl_scale_update; every other case
 * (preview, r outside [1, 125], |acc| >= 2^31) by tl_upd_apply_row itself. */
static inline void apply_one_wide(const tl_upd_row *u, int64_t a, int32_t idx)
{
    int32_t r = 31 + u->Ec - u->ws;
    if (u->dw_preview || r < 1 || r > 62 + 63 || (uint64_t)(a + INT32_MAX) >= (uint64_t)UINT32_MAX) {
        tl_upd_apply_row(u, &a, 1, idx, 1);
        return;
    }
    int64_t prod = a * (int64_t)u->wm;
    if (r > 62) {
        prod >>= (r - 62);
        r = 62;
    }
    const int64_t fl = prod >> r;
    const uint32_t top = r >= 32 ? (uint32_t)((uint64_t)prod >> (r - 32)) : (uint32_t)((uint64_t)prod << (32 - r));
    const uint32_t rnd = u->rounding == TL_ROUND_NEAREST ? 0x7FFFFFFFu : tl_mix32(u->prefix ^ (uint32_t)idx);
    const int64_t dw = fl + (rnd < top ? 1 : 0);
    u->weights[idx] = (int8_t)TL_CLAMP((int64_t)u->weights[idx] - dw, -127, 127);
}

/* tl_lls_update_ref of a hidden conv / depthwise layer: the same integers, TL_WIDE_C output
 * channels at a time (the caller checked tl_wide_usable and a->fast). */
void tl_lls_update_x86(tl_model *m, int32_t i, const tl_arena *a, const int8_t *in, const int8_t *out, int32_t E,
                       int classifier, int64_t *dw_preview, int64_t *db_preview)
{
    (void)classifier; /* hidden layers only */
    tl_layer *L = &m->layers[i];
    const int32_t *d = a->signal;
    const int32_t oc = L->out_c, cells = L->pool * L->pool, n_w = (int32_t)tl_layer_n_weights(L);
    const int dw_kind = L->kind == TL_LAYER_DWCONV;
    const int32_t N = L->k_h * L->k_w * L->in_c; /* conv weights per output channel */
    const uint32_t prefix = tl_upd_prefix(m->cfg.seed, m->step, (uint32_t)i);
    /* the working buffers, 8-aligned parts of a->fast (TL_WIDE_FAST_BYTES) */
    int64_t *G = (int64_t *)a->fast;                                /* (TL_WIDE_C, TL_WIDE_N) */
    int32_t *Ball_buf = (int32_t *)(void *)(G + TL_WIDE_C * TL_WIDE_N); /* (TL_WIDE_BALL) */
    int16_t *D = (int16_t *)(void *)(Ball_buf + TL_WIDE_BALL);       /* (TL_WIDE_MAX_P, TL_WIDE_C) */
    int16_t *v0 = D + TL_WIDE_MAX_P * TL_WIDE_C;                     /* (TL_WIDE_MAX_CELLS, TL_WIDE_C) */
    /* one n-block and several channel blocks: pack B once for all of them */
    const int32_t *Ball = NULL;
    if (!dw_kind && oc > TL_WIDE_C && N <= TL_WIDE_N &&
        (int64_t)((L->out_h * L->out_w + 1) / 2) * ((N + 15) & ~15) <= TL_WIDE_BALL) {
        tl_wide_pack_b(L, in, 0, N, Ball_buf);
        Ball = Ball_buf;
    }
    for (int32_t c0 = 0; c0 < oc; c0 += TL_WIDE_C) {
        const int32_t nc = TL_MIN(TL_WIDE_C, oc - c0);
        tl_upd_row u[TL_WIDE_C];
        int32_t Ec[TL_WIDE_C], any[TL_WIDE_C], any_block = 0;
        int64_t bsum[TL_WIDE_C];
        for (int32_t k = 0; k < cells * TL_WIDE_C; k++)
            v0[k] = 0;
        for (int32_t cc = 0; cc < nc; cc++) {
            const int32_t c = c0 + cc;
            const int32_t rs = tl_upd_channel_shift(d + c * cells, cells);
            Ec[cc] = E - rs;
            for (int32_t t = 0; t < cells; t++)
                v0[t * TL_WIDE_C + cc] = (int16_t)tl_upd_cell_signal(d[c * cells + t], rs);
            u[cc] = tl_upd_channel(m, L, c, Ec[cc], prefix, dw_preview);
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
                        apply_one_wide(&u[cc], G[tap * TL_WIDE_C + cc], tap * oc + c0 + cc);
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
                tl_upd_bias(m, L, c0 + cc, bsum[cc], Ec[cc], prefix ^ (uint32_t)(n_w + c0 + cc), db_preview);
    }
}
#endif /* TL_HOST_WIDE */
