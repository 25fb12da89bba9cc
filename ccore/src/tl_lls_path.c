/* The one place that chooses how each job of LLS training is computed: on x86-64 hosts by
 * tl_lls_x86.c (when the CPU has AVX2 and the caller's arena has room for its buffers), on
 * Cortex-M with the DSP extension by tl_lls_dsp.c, else by the portable code (tl_lls.c,
 * tl_lls_update.c), which is the specification. TL_FORCE_GENERIC (tl_config.h) turns both fast
 * paths off. Every choice gives the same result bits; only the speed differs. */
#include "tl_lls.h"
#include "tl_x86.h"

/* The x86 buffers: the update's (TL_WIDE_FAST_BYTES) and, at another time of the step, the head's
 * g_t and u_t (2 x TL_LLS_MAX_T int64). */
#define TL_HEAD_FAST_BYTES ((int32_t)(2 * sizeof(int64_t) * TL_LLS_MAX_T))

int32_t tl_lls_fast_bytes(void)
{
#if TL_HOST_WIDE
    return TL_MAX(TL_WIDE_FAST_BYTES, TL_HEAD_FAST_BYTES);
#else
    return 0;
#endif
}

static int have_fast(const tl_arena *a)
{
    return a->fast != NULL && a->fast_size >= tl_lls_fast_bytes() && tl_lls_fast_bytes() > 0;
}

void tl_lls_pool(const tl_layer *L, const int8_t *out, int32_t *P)
{
#if TL_HOST_WIDE
    if (L->out_c * L->pool * L->pool <= TL_LLS_MAX_T && tl_x86_avx2())
        tl_wide_pool(L, out, P);
    else
        tl_lls_pool_ref(L, out, P);
#elif TL_HAVE_DSP
    tl_lls_pool_dsp(L, out, P);
#else
    tl_lls_pool_ref(L, out, P);
#endif
}

int64_t tl_lls_square_proj(const int32_t *P, int32_t T, uint32_t inc)
{
#if TL_HOST_WIDE
    if (tl_x86_avx2())
        return tl_wide_square_proj(P, T, inc);
#endif
    return tl_lls_square_proj_ref(P, T, inc);
}

int64_t *tl_lls_u_buffer(const tl_arena *a, int32_t T)
{
    if (!have_fast(a) || T > TL_LLS_MAX_T) /* pool 1 on > TL_LLS_MAX_T channels */
        return NULL;
    return (int64_t *)a->fast;
}

int64_t *tl_lls_square_g(const tl_arena *a, const uint32_t *inc, const int32_t *w, int32_t C, int32_t T)
{
#if TL_HOST_WIDE
    if (have_fast(a) && T <= TL_LLS_MAX_T && tl_x86_avx2()) {
        int64_t *g = (int64_t *)a->fast + TL_LLS_MAX_T;
        tl_wide_square_g(inc, w, C, T, g);
        return g;
    }
#else
    (void)a, (void)inc, (void)w, (void)C, (void)T;
#endif
    return NULL;
}

void tl_lls_update(tl_model *m, int32_t i, const tl_arena *a, const int8_t *in, const int8_t *out, int32_t E,
                   int classifier, int64_t *dw_preview, int64_t *db_preview)
{
    /* spelled so that a build links only the paths it can take (the DSP build: no portable loop) */
#if TL_HOST_WIDE
    if (!classifier && have_fast(a) && tl_wide_usable(&m->layers[i]))
        tl_lls_update_x86(m, i, a, in, out, E, classifier, dw_preview, db_preview);
    else
        tl_lls_update_ref(m, i, a, in, out, E, classifier, dw_preview, db_preview);
#elif TL_HAVE_DSP
    tl_lls_update_dsp(m, i, a, in, out, E, classifier, dw_preview, db_preview);
#else
    tl_lls_update_ref(m, i, a, in, out, E, classifier, dw_preview, db_preview);
#endif
}
