/* Names for status codes, and the library version. */
#include "tinylls.h"

const char *tl_strerror(tl_status s)
{
    switch (s) {
    case TL_OK: return "ok";
    case TL_ERR_ARG: return "invalid argument (NULL pointer or parameter out of range)";
    case TL_ERR_ARENA: return "scratch arena too small (see tl_model_arena_bytes)";
    case TL_ERR_SHAPE: return "tensor shapes do not fit together";
    case TL_ERR_LABEL: return "label out of range (must be 0 <= label < classes)";
    case TL_ERR_MODEL: return "malformed model description";
    case TL_ERR_UNSUPPORTED: return "unsupported layer, activation or option";
    case TL_ERR_QUANT: return "quantization parameter out of range";
    case TL_ERR_TRUNCATED: return "model file truncated";
    case TL_ERR_CRC: return "model file CRC32 mismatch (corrupted)";
    case TL_ERR_VERSION: return "unknown model file format version";
    case TL_ERR_MAGIC: return "not a tinylls model file (bad magic)";
    case TL_ERR_FROZEN: return "no trainable layer in the model";
    case TL_ERR_RAM: return "RAM for the trainable tensors too small (see tl_modelfile_load_rom)";
    case TL_ERR_FLASH: return "flash operation failed or read back differs (checkpoint)";
    case TL_ERR_FLASH_SIZE: return "checkpoint larger than one flash slot";
    default: return "unknown status code";
    }
}

const char *tl_version(void)
{
    return "tinylls 0.1.0";
}
