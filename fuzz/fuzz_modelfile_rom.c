/* libFuzzer target: tl_modelfile_load_rom (model file left in flash, trainable tensors copied to
 * RAM). Input: the model file bytes. The file lies in a read-only mapping-sized heap block; the
 * RAM copy is sized by the loader's own answer to the size query, so any write past what it
 * asked for is an ASan report. An accepted file must run one inference and one training step. */
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
    uint8_t *arena = calloc(1, (size_t)need);
    tl_ctx ctx = {arena, need};
    tl_result res;
    const int8_t *input = (const int8_t *)(arena + at);
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
    uint8_t *rom = malloc(size ? size : 1);
    memcpy(rom, data, size);
    tl_model m;
    int32_t ram_bytes = -1;
    tl_status s = tl_modelfile_load_rom(rom, (int32_t)size, NULL, 0, &ram_bytes, layers, TL_MAX_LAYERS, &m);
    if (s == TL_ERR_RAM && ram_bytes > 0 && ram_bytes <= MAX_FILE_BYTES) {
        uint8_t *ram = malloc((size_t)ram_bytes);
        if (tl_modelfile_load_rom(rom, (int32_t)size, ram, ram_bytes, NULL, layers, TL_MAX_LAYERS, &m) == TL_OK)
            run_once(&m);
        free(ram);
    } else if (s == TL_OK) {
        run_once(&m);     /* nothing trainable: nothing to copy */
    }
    free(rom);
    return 0;
}
