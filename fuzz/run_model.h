/* What the two model-file targets (fuzz_modelfile.c, fuzz_modelfile_rom.c) share: a model the
 * loader accepted must also run, and mutations keep a valid CRC most of the time. */
#ifndef TINYLLS_FUZZ_RUN_MODEL_H
#define TINYLLS_FUZZ_RUN_MODEL_H

#include <stdint.h>
#include <stdlib.h>

#include "tinylls.h"
#include "fix_crc.h"

enum { MAX_FILE_BYTES = 1 << 20, MAX_RUN_ARENA = 1 << 16 };

/* One inference and one training step on a zero input, so "accepted" really means "every shape
 * and range is safe". The arena is exactly the planned size: ASan catches a kernel stepping past
 * the plan. */
static void run_once(tl_model *m)
{
    int32_t need = tl_model_arena_bytes(m);
    int32_t at = tl_model_input_offset(m);
    if (need <= 0 || need > MAX_RUN_ARENA || at < 0)
        return;
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

#endif /* TINYLLS_FUZZ_RUN_MODEL_H */
