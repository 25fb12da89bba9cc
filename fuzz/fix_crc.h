/* Shared by the C fuzz targets: puts right the checksums a mutation broke, so mutated inputs get
 * past the CRC checks into the parsers behind them (without it nearly every mutation of a model
 * file or checkpoint stops at TL_ERR_CRC). Used from the custom mutators on 7 of 8 mutations;
 * the 8th keeps a broken CRC so the checks themselves stay fuzzed. */
#ifndef FUZZ_FIX_CRC_H
#define FUZZ_FIX_CRC_H

#include <stddef.h>
#include <stdint.h>

#include "tinylls.h"

size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size);

static inline uint32_t fix_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline void fix_put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}

/* A model file (docs/modelfile.md: magic, version, body length, CRC32 of the body): the body
 * length is clamped to the bytes present and the CRC recomputed. */
static inline void fix_modelfile_crc(uint8_t *file, size_t size)
{
    if (size < 16 || file[0] != 'T' || file[1] != 'L' || file[2] != 'L' || file[3] != 'S')
        return;
    uint32_t body = fix_get_u32(file + 8);
    if (body > size - 16) {
        body = (uint32_t)(size - 16);
        fix_put_u32(file + 8, body);
    }
    fix_put_u32(file + 12, tl_crc32(0, file + 16, (int32_t)body));
}

/* A checkpoint slot at rec (avail bytes of it present, slot_bytes long, page_bytes the payload's
 * offset): when it holds a commit record (magic), the payload CRC (word 4, only when the whole
 * payload is present) and the record CRC (word 27) are recomputed. */
static inline void fix_ckpt_slot(uint8_t *rec, size_t avail, uint32_t slot_bytes, uint32_t page_bytes)
{
    if (avail < TL_CKPT_RECORD_BYTES || slot_bytes < page_bytes || fix_get_u32(rec) != TL_CKPT_MAGIC)
        return;
    uint32_t n = fix_get_u32(rec + 12);
    if (n <= slot_bytes - page_bytes && (size_t)page_bytes + n <= avail)
        fix_put_u32(rec + 16, tl_crc32(0, rec + page_bytes, (int32_t)n));
    fix_put_u32(rec + 4 * (TL_CKPT_RECORD_WORDS - 1), tl_crc32(0, rec, 4 * (TL_CKPT_RECORD_WORDS - 1)));
}

#endif
