/* libFuzzer target: tl_modelfile_load (model file received into RAM, parsed in place).
 * Input: the model file bytes. A file the loader accepts must also run: one inference and one
 * training step on a zero input, so "accepted" really means "every shape and range is safe". */
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
