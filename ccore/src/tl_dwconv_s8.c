/* Depthwise convolution (depth multiplier 1), TFLite's reference
 * integer_ops::DepthwiseConvPerChannel arithmetic. Filter layout (1, KH, KW, C).
 *
 * Loop order of the fast path: per output pixel, the taps that fall inside the image are found
 * once (no per-tap bounds checks), and the channels run innermost over contiguous memory in
 * blocks of int32 accumulators. Each accumulator adds the same products as the reference (taps
 * outside the image skipped), so the result is identical. */
#include "tl_config.h"
#include "tl_x86.h"

#define TL_DW_CBLK 64 /* channels per block of stack accumulators */

static TL_HOST_CLONES void dw_pixel(const tl_conv_params *p, const tl_quant *q, const int8_t *in, int32_t iw,
                                    int32_t ch, const int8_t *filter, int32_t kw, const int32_t *bias,
                                    int32_t y0, int32_t x0, int32_t fy0, int32_t fy1, int32_t fx0, int32_t fx1,
                                    int8_t *out)
{
    int32_t acc[TL_DW_CBLK];
    const int32_t zp = p->in_zp;
    for (int32_t c0 = 0; c0 < ch; c0 += TL_DW_CBLK) {
        const int32_t nc = TL_MIN(TL_DW_CBLK, ch - c0);
        for (int32_t c = 0; c < nc; c++)
            acc[c] = 0;
        for (int32_t fy = fy0; fy < fy1; fy++) {
            for (int32_t fx = fx0; fx < fx1; fx++) {
                const int8_t *x = in + ((y0 + fy) * iw + (x0 + fx)) * ch + c0;
                const int8_t *w = filter + (fy * kw + fx) * ch + c0;
                for (int32_t c = 0; c < nc; c++)
                    acc[c] += (int32_t)w[c] * ((int32_t)x[c] - zp);
            }
        }
        for (int32_t c = 0; c < nc; c++) {
            int32_t a = acc[c];
            if (bias)
                a += bias[c0 + c];
            a = tl_requantize_p(p, a, q->mult[c0 + c], q->shift[c0 + c]) + p->out_zp;
            out[c0 + c] = (int8_t)TL_CLAMP(a, p->act_min, p->act_max);
        }
    }
}

#if TL_HOST_WIDE
/* Host AVX2: dw_pixel eight channels per vector (int32 lanes), requantized eight at a time; the
 * channels past the last multiple of 8 go through dw_pixel's own arithmetic, one by one. */
static TL_AVX2 void dw_pixel_x86(const tl_conv_params *p, const tl_quant *q, const int8_t *in, int32_t iw,
                                 int32_t ch, const int8_t *filter, int32_t kw, const int32_t *bias, int32_t y0,
                                 int32_t x0, int32_t fy0, int32_t fy1, int32_t fx0, int32_t fx1, int8_t *out)
{
    const __m256i zp = _mm256_set1_epi32(p->in_zp), ozp = _mm256_set1_epi32(p->out_zp);
    const __m256i amin = _mm256_set1_epi32(p->act_min), amax = _mm256_set1_epi32(p->act_max);
    int32_t c = 0;
    for (; c + 8 <= ch; c += 8) {
        __m256i acc = bias ? _mm256_loadu_si256((const __m256i *)(bias + c)) : _mm256_setzero_si256();
        for (int32_t fy = fy0; fy < fy1; fy++) {
            for (int32_t fx = fx0; fx < fx1; fx++) {
                const int8_t *x = in + ((y0 + fy) * iw + (x0 + fx)) * ch + c;
                const int8_t *w = filter + (fy * kw + fx) * ch + c;
                const __m256i xv = _mm256_sub_epi32(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)x)), zp);
                const __m256i wv = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)w));
                acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(wv, xv));
            }
        }
        __m256i left, right;
        tl_requant_params_x8(q->shift + c, &left, &right);
        __m256i v = tl_requantize_x8(acc, _mm256_loadu_si256((const __m256i *)(q->mult + c)), left, right);
        v = _mm256_min_epi32(_mm256_max_epi32(_mm256_add_epi32(v, ozp), amin), amax);
        tl_store_s8x8(out + c, v);
    }
    for (; c < ch; c++) {
        int32_t a = 0;
        for (int32_t fy = fy0; fy < fy1; fy++)
            for (int32_t fx = fx0; fx < fx1; fx++)
                a += (int32_t)filter[(fy * kw + fx) * ch + c] * ((int32_t)in[((y0 + fy) * iw + (x0 + fx)) * ch + c] - p->in_zp);
        if (bias)
            a += bias[c];
        a = tl_requantize_p(p, a, q->mult[c], q->shift[c]) + p->out_zp;
        out[c] = (int8_t)TL_CLAMP(a, p->act_min, p->act_max);
    }
}
#endif

/* The reference loop (TFLite order), kept as the TL_FORCE_GENERIC build. */
static void dw_reference(const tl_conv_params *p, const tl_quant *q, int32_t ih, int32_t iw, int32_t ch,
                         const int8_t *in, int32_t kh, int32_t kw, const int8_t *filter, const int32_t *bias,
                         int32_t oh, int32_t ow, int8_t *out)
{
    for (int32_t oy = 0; oy < oh; oy++) {
        for (int32_t ox = 0; ox < ow; ox++) {
            const int32_t y0 = oy * p->stride_h - p->pad_top;
            const int32_t x0 = ox * p->stride_w - p->pad_left;
            for (int32_t c = 0; c < ch; c++) {
                int32_t acc = 0;
                for (int32_t fy = 0; fy < kh; fy++) {
                    const int32_t y = y0 + fy;
                    if (y < 0 || y >= ih)
                        continue;
                    for (int32_t fx = 0; fx < kw; fx++) {
                        const int32_t x = x0 + fx;
                        if (x < 0 || x >= iw)
                            continue;
                        acc += (int32_t)filter[(fy * kw + fx) * ch + c] *
                               ((int32_t)in[(y * iw + x) * ch + c] - p->in_zp);
                    }
                }
                if (bias)
                    acc += bias[c];
                acc = tl_requantize_p(p, acc, q->mult[c], q->shift[c]) + p->out_zp;
                out[(oy * ow + ox) * ch + c] = (int8_t)TL_CLAMP(acc, p->act_min, p->act_max);
            }
        }
    }
}

tl_status tl_dwconv_s8(const tl_conv_params *p, const tl_quant *q,
                       const tl_dims *in_dims, const int8_t *in,
                       const tl_dims *filter_dims, const int8_t *filter, const int32_t *bias,
                       const tl_dims *out_dims, int8_t *out)
{
    if (!p || !q || !in_dims || !in || !filter_dims || !filter || !out_dims || !out)
        return TL_ERR_ARG;
    const int32_t ih = in_dims->h, iw = in_dims->w, ch = in_dims->c;
    const int32_t kh = filter_dims->h, kw = filter_dims->w;
    const int32_t oh = out_dims->h, ow = out_dims->w;
    if (filter_dims->c != ch || out_dims->c != ch || p->stride_h < 1 || p->stride_w < 1)
        return TL_ERR_SHAPE;
    if (TL_REFERENCE_KERNELS) {
        dw_reference(p, q, ih, iw, ch, in, kh, kw, filter, bias, oh, ow, out);
        return TL_OK;
    }
#if TL_HOST_WIDE
    int x86 = tl_x86_avx2() && !p->single_rounding;
    for (int32_t c = 0; c < ch && x86; c++)
        x86 = q->mult[c] >= 0; /* tl_requantize_x8's domain */
#endif
    for (int32_t oy = 0; oy < oh; oy++) {
        const int32_t y0 = oy * p->stride_h - p->pad_top;
        const int32_t fy0 = TL_MAX(0, -y0), fy1 = TL_MIN(kh, ih - y0);
        for (int32_t ox = 0; ox < ow; ox++) {
            const int32_t x0 = ox * p->stride_w - p->pad_left;
            const int32_t fx0 = TL_MAX(0, -x0), fx1 = TL_MIN(kw, iw - x0);
#if TL_HOST_WIDE
            if (x86) {
                dw_pixel_x86(p, q, in, iw, ch, filter, kw, bias, y0, x0, fy0, fy1, fx0, fx1, out + (oy * ow + ox) * ch);
                continue;
            }
#endif
            dw_pixel(p, q, in, iw, ch, filter, kw, bias, y0, x0, fy0, fy1, fx0, fx1, out + (oy * ow + ox) * ch);
        }
    }
    return TL_OK;
}
