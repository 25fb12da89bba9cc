/* tinylls host runner: see tl_host_api.h. Uses POSIX threads, malloc and clock_gettime, so it is
 * compiled into the host extension only, never into firmware. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tinylls.h"
#include "tl_host_api.h"

#define TL_HOST_MIN(a, b) ((a) < (b) ? (a) : (b))
#define TL_HOST_MAX_STAGES 16
#define TL_HOST_QUEUE 4 /* samples in flight between two stages */

/* ---------------------------------------------------------------- one stage's layers */
typedef struct {
    tl_model m;        /* shallow copy: same layers, own step counter */
    void *arena_mem;   /* this thread's arena: the plan plus the fast paths' buffers (heap, not
                        * the thread's stack) */
    tl_ctx arena;
    tl_result res;     /* the step's per-layer results (only pred is used) */
} stage_ctx;

static tl_status stage_init(stage_ctx *s, const tl_model *m)
{
    s->m = *m;
    s->arena_mem = NULL;
    const int32_t plan = tl_model_arena_bytes(m), fast = tl_model_fast_scratch_bytes(m);
    if (plan < 0)
        return plan;
    if (fast < 0)
        return fast;
    s->arena_mem = malloc((size_t)plan + (size_t)fast + 16);
    if (!s->arena_mem)
        return TL_ERR_ARENA;
    s->arena.buf = (void *)(((uintptr_t)s->arena_mem + 7u) & ~(uintptr_t)7u);
    s->arena.size = plan + fast;
    return TL_OK;
}

/* Layers [lo, hi) of one training step on sample `step` (tl_model_step_layers, one layer per call
 * when ns times them); returns the last layer's output. */
static tl_status run_layers(stage_ctx *s, uint32_t step, int32_t lo, int32_t hi, const int8_t *in,
                            int32_t label, int32_t *pred, const int8_t **last_out, int64_t *ns)
{
    tl_model *m = &s->m;
    m->step = step;
    s->res.pred = -1;
    tl_status st = TL_OK;
    if (!ns) {
        st = tl_model_step_layers(m, &s->arena, lo, hi, in, label, 1, 0, &s->res, last_out);
    } else {
        *last_out = in;
        for (int32_t i = lo; i < hi && st == TL_OK; i++) {
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            st = tl_model_step_layers(m, &s->arena, i, i + 1, *last_out, label, 1, 0, &s->res, last_out);
            clock_gettime(CLOCK_MONOTONIC, &t1);
            ns[i] += (int64_t)(t1.tv_sec - t0.tv_sec) * 1000000000 + (t1.tv_nsec - t0.tv_nsec);
        }
    }
    if (pred && hi == m->n_layers)
        *pred = s->res.pred;
    return st;
}

/* ---------------------------------------------------------------- queues between stages */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int8_t *buf;        /* (TL_HOST_QUEUE, bytes) */
    int32_t bytes;
    int64_t head, tail; /* samples pushed / popped */
    int failed;         /* a stage failed: everyone stops */
} queue;

typedef struct {
    stage_ctx ctx;
    int32_t lo, hi;
    queue *in_q, *out_q;
    const int8_t *inputs;
    int32_t in_bytes;
    const int32_t *labels;
    int32_t *preds;
    int32_t n, first;     /* samples [first, n) */
    uint32_t step0;       /* step of sample 0 */
    tl_status status;
    int *abort_flag;
    queue *all_q[TL_HOST_MAX_STAGES];
    int32_t n_q;
} stage;

static void abort_all(stage *s)
{
    for (int32_t k = 0; k < s->n_q; k++) {
        pthread_mutex_lock(&s->all_q[k]->mu);
        s->all_q[k]->failed = 1;
        pthread_cond_broadcast(&s->all_q[k]->cv);
        pthread_mutex_unlock(&s->all_q[k]->mu);
    }
}

static void *stage_main(void *arg)
{
    stage *s = (stage *)arg;
    for (int32_t j = s->first; j < s->n; j++) {
        const int8_t *in;
        int8_t *slot_in = NULL;
        if (s->in_q) {
            queue *q = s->in_q;
            pthread_mutex_lock(&q->mu);
            while (q->head == q->tail && !q->failed)
                pthread_cond_wait(&q->cv, &q->mu);
            const int failed = q->failed;
            pthread_mutex_unlock(&q->mu);
            if (failed)
                return NULL;
            slot_in = q->buf + (q->tail % TL_HOST_QUEUE) * q->bytes;
            in = slot_in;
        } else {
            in = s->inputs + (size_t)j * (size_t)s->in_bytes;
        }
        const int8_t *out;
        int32_t pred = -1;
        tl_status st = run_layers(&s->ctx, s->step0 + (uint32_t)j, s->lo, s->hi, in, s->labels[j], &pred, &out,
                                  NULL);
        if (st != TL_OK) {
            s->status = st;
            abort_all(s);
            return NULL;
        }
        if (s->preds && s->hi == s->ctx.m.n_layers)
            s->preds[j] = pred;
        if (s->in_q) { /* release the input slot */
            queue *q = s->in_q;
            pthread_mutex_lock(&q->mu);
            q->tail++;
            pthread_cond_broadcast(&q->cv);
            pthread_mutex_unlock(&q->mu);
        }
        if (s->out_q) {
            queue *q = s->out_q;
            pthread_mutex_lock(&q->mu);
            while (q->head - q->tail >= TL_HOST_QUEUE && !q->failed)
                pthread_cond_wait(&q->cv, &q->mu);
            const int failed = q->failed;
            pthread_mutex_unlock(&q->mu);
            if (failed)
                return NULL;
            memcpy(q->buf + (q->head % TL_HOST_QUEUE) * q->bytes, out, (size_t)q->bytes);
            pthread_mutex_lock(&q->mu);
            q->head++;
            pthread_cond_broadcast(&q->cv);
            pthread_mutex_unlock(&q->mu);
        }
    }
    return NULL;
}

/* ---------------------------------------------------------------- checks and partition */
static tl_status check_epoch(tl_model *m, const int8_t *inputs, const int32_t *labels, int32_t n)
{
    if (!m || (n > 0 && (!inputs || !labels)) || n < 0)
        return TL_ERR_ARG;
    tl_status st = tl_model_prepare(m);
    if (st != TL_OK)
        return st;
    int32_t any = 0;
    for (int32_t i = 0; i < m->n_layers; i++)
        any |= m->layers[i].trainable;
    if (!any)
        return TL_ERR_FROZEN;
    for (int32_t j = 0; j < n; j++)
        if (labels[j] < 0 || labels[j] >= m->classes)
            return TL_ERR_LABEL;
    return TL_OK;
}

/* Stage boundaries that balance the measured per-layer times: cut k goes before the first layer
 * at which the running sum passes k/stages of the total (every stage keeps >= 1 layer). */
static void balance(const int64_t *ns, int32_t n_layers, int32_t stages, int32_t *bound)
{
    int64_t total = 0, acc = 0;
    for (int32_t i = 0; i < n_layers; i++)
        total += ns[i] > 0 ? ns[i] : 1;
    int32_t s = 1;
    bound[0] = 0;
    for (int32_t i = 0; i < n_layers; i++) {
        const int64_t c = ns[i] > 0 ? ns[i] : 1;
        if (s < stages && i > bound[s - 1] && acc + c / 2 >= total * s / stages && n_layers - i >= stages - s)
            bound[s++] = i;
        acc += c;
    }
    for (; s < stages; s++)
        bound[s] = bound[s - 1] + 1;
    bound[stages] = n_layers;
}

tl_status tl_host_train_epoch(tl_model *m, const int8_t *inputs, const int32_t *labels, int32_t n,
                              int32_t threads, const int32_t *split, int32_t *preds)
{
    tl_status st = check_epoch(m, inputs, labels, n);
    if (st != TL_OK)
        return st;
    if (n == 0)
        return TL_OK;
    const int32_t in_bytes = tl_layer_in_bytes(&m->layers[0]);
    int32_t stages = TL_HOST_MIN(threads < 1 ? 1 : threads, TL_HOST_MAX_STAGES);
    stages = TL_HOST_MIN(stages, m->n_layers);
    const uint32_t step0 = m->step;

    /* the first samples on this thread, timing every layer of the last one for the partition
     * (sample 0 alone would also time first-touch page faults and cold caches) */
    stage_ctx seq;
    st = stage_init(&seq, m);
    if (st != TL_OK) {
        free(seq.arena_mem);
        return st;
    }
    int64_t ns[TL_MAX_LAYERS] = {0};
    int32_t first = 0;
    if (stages == 1 || !split) {
        const int32_t warm = stages == 1 ? 1 : TL_HOST_MIN(n, 2);
        for (int32_t j = 0; j < warm && st == TL_OK; j++) {
            const int8_t *out;
            int32_t pred = -1;
            st = run_layers(&seq, step0 + (uint32_t)j, 0, m->n_layers, inputs + (size_t)j * (size_t)in_bytes,
                            labels[j], &pred, &out, j == warm - 1 ? ns : NULL);
            if (preds)
                preds[j] = pred;
        }
        first = warm;
    }
    if (stages == 1) {
        for (int32_t j = 1; j < n && st == TL_OK; j++) {
            const int8_t *out;
            int32_t pred = -1;
            st = run_layers(&seq, step0 + (uint32_t)j, 0, m->n_layers, inputs + (size_t)j * (size_t)in_bytes,
                            labels[j], &pred, &out, NULL);
            if (preds)
                preds[j] = pred;
        }
        free(seq.arena_mem);
        m->step = step0 + (uint32_t)n;
        return st;
    }
    free(seq.arena_mem);
    if (st != TL_OK)
        return st;
    m->step = step0 + (uint32_t)first; /* samples [0, first) are trained; the rest follow below */

    int32_t bound[TL_HOST_MAX_STAGES + 1];
    if (split) {
        bound[0] = 0;
        for (int32_t s = 1; s < stages; s++) {
            bound[s] = split[s - 1];
            if (bound[s] <= bound[s - 1] || bound[s] >= m->n_layers)
                return TL_ERR_ARG;
        }
        bound[stages] = m->n_layers;
    } else {
        balance(ns, m->n_layers, stages, bound);
    }

    stage st_[TL_HOST_MAX_STAGES];
    queue qs[TL_HOST_MAX_STAGES];
    pthread_t tid[TL_HOST_MAX_STAGES];
    int32_t n_q = stages - 1, ok = 1;
    memset(st_, 0, sizeof st_);
    for (int32_t k = 0; k < n_q; k++) {
        queue *q = &qs[k];
        q->bytes = tl_layer_out_bytes(&m->layers[bound[k + 1] - 1]);
        q->buf = (int8_t *)malloc((size_t)q->bytes * TL_HOST_QUEUE);
        q->head = q->tail = 0;
        q->failed = 0;
        pthread_mutex_init(&q->mu, NULL);
        pthread_cond_init(&q->cv, NULL);
        ok &= q->buf != NULL;
    }
    for (int32_t s = 0; s < stages; s++) {
        stage *g = &st_[s];
        g->status = stage_init(&g->ctx, m);
        ok &= g->status == TL_OK;
        g->lo = bound[s];
        g->hi = bound[s + 1];
        g->in_q = s > 0 ? &qs[s - 1] : NULL;
        g->out_q = s < n_q ? &qs[s] : NULL;
        g->inputs = inputs;
        g->in_bytes = in_bytes;
        g->labels = labels;
        g->preds = preds;
        g->n = n;
        g->first = first;
        g->step0 = step0;
        g->n_q = n_q;
        for (int32_t k = 0; k < n_q; k++)
            g->all_q[k] = &qs[k];
    }
    st = ok ? TL_OK : TL_ERR_ARENA;
    int32_t started = 0;
    if (ok)
        for (; started < stages; started++)
            if (pthread_create(&tid[started], NULL, stage_main, &st_[started]) != 0)
                break;
    if (ok && started < stages) { /* could not start every thread: run nothing further */
        abort_all(&st_[0]);
        st = TL_ERR_UNSUPPORTED;
    }
    for (int32_t s = 0; s < started; s++)
        pthread_join(tid[s], NULL);
    for (int32_t s = 0; s < stages; s++) {
        if (st == TL_OK && st_[s].status != TL_OK)
            st = st_[s].status;
        free(st_[s].ctx.arena_mem);
    }
    for (int32_t k = 0; k < n_q; k++) {
        free(qs[k].buf);
        pthread_mutex_destroy(&qs[k].mu);
        pthread_cond_destroy(&qs[k].cv);
    }
    if (st == TL_OK)
        m->step = step0 + (uint32_t)n;
    return st;
}

/* ---------------------------------------------------------------- batched inference */
typedef struct {
    stage_ctx ctx;
    const int8_t *inputs;
    int32_t in_bytes, lo, hi, with_local;
    int32_t *preds, *logits, *local_preds;
    tl_status status;
} infer_part;

/* Samples [lo, hi) one tl_model_infer call each, on this part's own model copy and arena. */
static void *infer_main(void *arg)
{
    infer_part *p = arg;
    tl_model *m = &p->ctx.m;
    tl_result *res = &p->ctx.res;
    for (int32_t j = p->lo; j < p->hi; j++) {
        p->status = tl_model_infer(m, &p->ctx.arena, p->inputs + (size_t)j * (size_t)p->in_bytes, p->with_local, res);
        if (p->status != TL_OK)
            break;
        p->preds[j] = res->pred;
        if (p->logits)
            for (int32_t c = 0; c < m->classes; c++)
                p->logits[(size_t)j * (size_t)m->classes + c] = res->logits[c];
        if (p->local_preds)
            for (int32_t i = 0; i < m->n_layers; i++)
                p->local_preds[(size_t)j * (size_t)m->n_layers + i] = res->local_pred[i];
    }
    return NULL;
}

tl_status tl_host_infer_many(tl_model *m, const int8_t *inputs, int32_t n, int32_t threads, int32_t with_local,
                             int32_t *preds, int32_t *logits, int32_t *local_preds)
{
    if (!m || n < 0 || threads < 1 || (n > 0 && (!inputs || !preds)) || m->n_layers < 1)
        return TL_ERR_ARG;
    if (n == 0)
        return TL_OK;
    const int32_t parts = TL_HOST_MIN(TL_HOST_MIN(threads, n), TL_HOST_MAX_STAGES);
    infer_part pt[TL_HOST_MAX_STAGES];
    pthread_t tid[TL_HOST_MAX_STAGES];
    int started[TL_HOST_MAX_STAGES];
    const int32_t in_bytes = tl_layer_in_bytes(&m->layers[0]);
    tl_status st = TL_OK;
    int32_t ready = 0;
    for (; ready < parts; ready++) {
        infer_part *p = &pt[ready];
        p->status = stage_init(&p->ctx, m);
        if (p->status != TL_OK) {
            st = p->status;
            free(p->ctx.arena_mem);
            break;
        }
        p->inputs = inputs;
        p->in_bytes = in_bytes;
        p->lo = (int32_t)((int64_t)n * ready / parts);
        p->hi = (int32_t)((int64_t)n * (ready + 1) / parts);
        p->with_local = with_local;
        p->preds = preds;
        p->logits = logits;
        p->local_preds = local_preds;
    }
    if (st == TL_OK) {
        /* parts 1.. on their own threads (or here, should a thread not start), part 0 here */
        for (int32_t k = 1; k < parts; k++)
            started[k] = pthread_create(&tid[k], NULL, infer_main, &pt[k]) == 0;
        infer_main(&pt[0]);
        for (int32_t k = 1; k < parts; k++) {
            if (started[k])
                pthread_join(tid[k], NULL);
            else
                infer_main(&pt[k]);
        }
        for (int32_t k = 0; k < parts && st == TL_OK; k++)
            st = pt[k].status;
    }
    for (int32_t k = 0; k < ready; k++)
        free(pt[k].ctx.arena_mem);
    return st;
}

tl_status tl_host_infer_batch(tl_model *m, const int8_t *inputs, int32_t n, int32_t *preds)
{
    return tl_host_infer_many(m, inputs, n, 1, 0, preds, NULL, NULL);
}
