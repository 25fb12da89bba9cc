/* Early-exit inference from the LLS local heads (declared in tinylls_api.h, "early exit").
 *
 * Layer by layer with the model runtime's own loop (tl_model_step_layers on [i, i + 1): the same
 * kernels, arena places and fast buffers as tl_model_infer), then, for an eligible hidden layer,
 * its head's confidence (tl_lls_head_confidence: pooling, normalisation and projection of the
 * training head, on the layer's output where it lies in the arena, into that layer's own
 * learning-signal scratch, which the planner sized for the head). Nothing is allocated and the
 * model is not written: with no exit the answer is tl_model_infer's, bit for bit. */
#include "tl_lls.h"

tl_status tl_model_infer_exit(tl_model *m, const tl_ctx *arena, const int8_t *input, int32_t first_layer,
                              int32_t threshold_q16, tl_result *res, int32_t *exit_layer, int32_t *conf_q16)
{
    tl_arena a;
    tl_status s = tl_pass_begin(m, arena, input, res, &a);
    if (s != TL_OK)
        return s;
    const int32_t n = m->n_layers;
    if (first_layer < 0 || first_layer >= n || threshold_q16 < 0 || threshold_q16 > TL_EXIT_NEVER_Q16)
        return TL_ERR_ARG;
    for (int32_t c = 0; c < TL_MAX_CLASSES; c++)
        res->logits[c] = 0;
    if (conf_q16)
        for (int32_t i = 0; i < n; i++)
            conf_q16[i] = -1;
    const int8_t *in = input;
    for (int32_t i = 0; i < n; i++) {
        const int8_t *out;
        /* one layer, no label, no local heads: the forward pass (and for the last layer the
         * classifier's pred, logits and local_pred) exactly as tl_model_infer computes it */
        s = tl_model_step_layers(m, arena, i, i + 1, in, -1, 0, 0, res, &out);
        if (s != TL_OK)
            return s;
        if (i == n - 1) {
            res->local_loss_q16[i] = -1;
            break;
        }
        if (i >= first_layer && m->layers[i].kind != TL_LAYER_AVGPOOL) {
            int32_t pred, conf;
            tl_arena_output(&a, m, i); /* layer i's scratch pointers: the head's P goes in a.signal */
            s = tl_lls_head_confidence(m, i, &a, out, &pred, &conf);
            if (s != TL_OK)
                return s;
            res->local_pred[i] = pred;
            if (conf_q16)
                conf_q16[i] = conf;
            if (pred >= 0 && conf >= threshold_q16) {
                res->pred = pred;
                if (exit_layer)
                    *exit_layer = i;
                return TL_OK;
            }
        }
        in = out;
    }
    if (exit_layer)
        *exit_layer = n - 1;
    return TL_OK;
}
