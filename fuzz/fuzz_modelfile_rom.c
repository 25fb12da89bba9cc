/* libFuzzer target: tl_modelfile_load_rom (model file left in flash, trainable tensors copied to
 * RAM). Input: the model file bytes. The file lies in a read-only mapping-sized heap block; the
 * RAM copy is sized by the loader's own answer to the size query, so any write past what it
 * asked for is an ASan report. An accepted file must run one inference and one training step. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tinylls.h"
#include "run_model.h"

static tl_layer layers[TL_MAX_LAYERS];

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
