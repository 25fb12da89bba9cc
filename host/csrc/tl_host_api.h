/* tinylls host runner: whole epochs in one call, optionally pipelined across cores.
 *
 * Host-only (threads are OS calls, so this lives outside ccore). Plain C with no #include and no
 * #if, like ccore/include/tinylls_api.h, so host/_build_ffi.py can pass it to cffi's cdef. */

/* Trains on n samples in order, exactly as n calls of tl_model_train_step would: the same weights,
 * biases, LLS modulation and step counter, bit for bit, for every threads value.
 *   inputs  (n, in_h * in_w * in_c) int8, contiguous; labels (n)
 *   threads 1: one core, sequential. >= 2: layer pipeline over that many threads; LLS is
 *           update-unlocked, so layer l can train on sample j + 1 while layer l + 1 trains on
 *           sample j, and each layer still sees its inputs in order with the rounding stream of
 *           its sample's step. Threads beyond the number of layers are not used.
 *   preds   (n) classifier predictions, or NULL
 *   split   (threads - 1) first layer of each stage after the first, or NULL to balance the
 *           stages from the measured cost of the layers on the first sample
 * The model and every label are checked before anything is trained: on such an error nothing
 * changed. Out of memory (TL_ERR_ARENA) or no threads (TL_ERR_UNSUPPORTED) can stop a pipelined
 * run after its first sample; m->step then counts the samples trained. Returns TL_OK or TL_ERR_*. */
tl_status tl_host_train_epoch(tl_model *m, const int8_t *inputs, const int32_t *labels, int32_t n,
                              int32_t threads, const int32_t *split, int32_t *preds);

/* Classifier predictions of n samples (no training): the epoch's evaluation in one call. */
tl_status tl_host_infer_batch(tl_model *m, const int8_t *inputs, int32_t n, int32_t *preds);

/* Inference on n samples, exactly n calls of tl_model_infer(m, ..., with_local, ...) would give,
 * the samples split over `threads` threads (each with its own copy of the model struct and its
 * own arena; the model is only read).
 *   inputs       (n, in_h * in_w * in_c) int8, contiguous
 *   preds        (n) classifier predictions
 *   logits       (n, classes) classifier outputs (int8 values), or NULL
 *   local_preds  (n, n_layers) per-layer LLS head predictions (tl_result.local_pred: -1 where a
 *                layer has none, and everywhere with with_local = 0), or NULL
 * Returns TL_OK or TL_ERR_*; on an error the outputs of some samples may be unwritten. */
tl_status tl_host_infer_many(tl_model *m, const int8_t *inputs, int32_t n, int32_t threads, int32_t with_local,
                             int32_t *preds, int32_t *logits, int32_t *local_preds);
