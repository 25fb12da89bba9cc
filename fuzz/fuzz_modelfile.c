/* libFuzzer target: tl_modelfile_load (model file received into RAM, parsed in place).
 * Input: the model file bytes. A file the loader accepts must also run: one inference and one
 * training step on a zero input, so "accepted" really means "every shape and range is safe". */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tinylls.h"
#include "fix_crc.h"

enum { MAX_FILE_BYTES = 1 << 20, MAX_RUN_ARENA = 1 << 16 };

static tl_layer layers[TL_MAX_LAYERS];

static void run_once(tl_model *m)
{
    int32_t need = tl_model_arena_bytes(m);
    int32_t at = tl_model_input_offset(m);
    if (need <= 0 || need > MAX_RUN_ARENA || at < 0)
        return;
    /* exactly the planned size: ASan catches a kernel stepping past the plan */
    uint8_t *arena = calloc(1, (size_t)need);
    tl_ctx ctx = {arena, need};
    tl_result res;
    const int8_t *input = (const int8_t *)(arena + at);   /* zeros, staged where the plan allows */
    if (tl_model_infer(m, &ctx, input, 1, &res) == TL_OK)
        (void)tl_model_train_step(m, &ctx, input, 0, &res);
    free(arena);
}

/* mutations keep a valid CRC 7 times in 8 (fix_crc.h) */
size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed)
{
    size = LLVMFuzzerMutate(data, size, max_size);
    if (seed % 8 != 0)
        fix_modelfile_crc(data, size);
    return size;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > MAX_FILE_BYTES)
        return 0;
    /* a heap block of exactly the file's size (malloc aligns to 16): a read past the end is an
     * ASan report, not a silent read of the fuzzer's own buffer */
    uint8_t *blob = malloc(size ? size : 1);
    memcpy(blob, data, size);
    tl_model m;
    if (tl_modelfile_load(blob, (int32_t)size, layers, TL_MAX_LAYERS, &m) == TL_OK)
        run_once(&m);
    free(blob);
    return 0;
}
