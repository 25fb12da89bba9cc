/* libFuzzer target: the checkpoint reader (tl_ckpt_scan, tl_ckpt_restore) on arbitrary flash
 * contents, then a save and a second restore.
 * Input:
 *   byte 0      geometry: page 128 << (bit0), sector = page << (bits 1-2), 16 sectors
 *   byte 1      fault: 0 = none, else the flash operation (1-based) that fails, and all after it
 *   bytes 2-3   model file length m (LE), then m bytes of model file (loaded with tl_modelfile_load)
 *   the rest    the flash image (padded with 0xFF, erased NOR)
 * Checked: the flash is only used as NOR allows (sector-aligned erase, programs inside one page,
 * all inside the region); with no fault, a save that reports success must be what the next
 * restore finds (RESTORED, same generation, same step). A violation aborts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tinylls.h"
#include "fix_crc.h"

enum { MAX_FLASH = 16 * (256 << 3) };   /* 16 sectors of the largest geometry */

static uint8_t mem[MAX_FLASH];
static uint32_t sector_bytes, page_bytes, flash_bytes;
static uint32_t ops, fail_at;
static tl_layer layers[TL_MAX_LAYERS];

static int32_t failing(void)
{
    ops++;
    return fail_at && ops >= fail_at;
}

static int32_t flash_erase(void *user, uint32_t addr)
{
    (void)user;
    if (addr % sector_bytes || addr >= flash_bytes)
        abort();
    if (failing())
        return -1;
    memset(mem + addr, 0xFF, sector_bytes);
    return 0;
}

static int32_t flash_program(void *user, uint32_t addr, const uint8_t *data, int32_t n)
{
    (void)user;
    if (n < 0 || addr >= flash_bytes || (uint32_t)n > flash_bytes - addr ||
        (n > 0 && addr / page_bytes != (addr + (uint32_t)n - 1) / page_bytes))
        abort();
    if (failing())
        return -1;
    for (int32_t i = 0; i < n; i++)
        mem[addr + (uint32_t)i] &= data[i];
    return 0;
}

static int32_t flash_read(void *user, uint32_t addr, uint8_t *out, int32_t n)
{
    (void)user;
    if (n < 0 || addr > flash_bytes || (uint32_t)n > flash_bytes - addr)
        abort();
    if (failing())
        return -1;
    memcpy(out, mem + addr, (size_t)n);
    return 0;
}

/* mutations keep valid model-file and checkpoint CRCs 7 times in 8 (fix_crc.h) */
size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed)
{
    size = LLVMFuzzerMutate(data, size, max_size);
    if (seed % 8 == 0 || size < 4)
        return size;
    uint32_t page = 128u << (data[0] & 1), sector = page << ((data[0] >> 1) & 3);
    size_t m_len = (size_t)data[2] | ((size_t)data[3] << 8);
    if (m_len > size - 4)
        m_len = size - 4;
    fix_modelfile_crc(data + 4, m_len);
    size_t image = 4 + m_len, slot = 8 * (size_t)sector;      /* 16 sectors: two slots of 8 */
    for (size_t k = 0; k < 2 && image + k * slot < size; k++)
        fix_ckpt_slot(data + image + k * slot, size - image - k * slot, (uint32_t)slot, page);
    return size;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    page_bytes = 128u << (data[0] & 1);
    sector_bytes = page_bytes << ((data[0] >> 1) & 3);
    flash_bytes = 16 * sector_bytes;
    fail_at = data[1];
    ops = 0;
    size_t m_len = (size_t)data[2] | ((size_t)data[3] << 8);
    size_t pos = 4;
    if (m_len > size - pos)
        m_len = size - pos;
    uint8_t *file = malloc(m_len ? m_len : 1);
    memcpy(file, data + pos, m_len);
    pos += m_len;
    size_t image = size - pos < flash_bytes ? size - pos : flash_bytes;
    memset(mem, 0xFF, sizeof(mem));
    memcpy(mem, data + pos, image);

    tl_flash f = {flash_bytes, sector_bytes, page_bytes, flash_erase, flash_program, flash_read, NULL};
    tl_ckpt_slot slots[2];
    tl_model m;
    if (tl_modelfile_load(file, (int32_t)m_len, layers, TL_MAX_LAYERS, &m) != TL_OK) {
        (void)tl_ckpt_scan(&f, slots);      /* the reader alone, no model to restore into */
        free(file);
        return 0;
    }
    int32_t lls_variant = m.cfg.variant;
    tl_ckpt_state st;
    memset(&st, 0, sizeof(st));
    st.model_size = (uint32_t)m_len;
    st.model_crc = tl_crc32(0, file, (int32_t)m_len);
    int32_t found = -1;
    if (tl_ckpt_scan(&f, slots) == TL_OK &&
        tl_ckpt_restore(&f, &m, &st, lls_variant, slots, &found) == TL_OK) {
        st.model_size = (uint32_t)m_len;     /* ours, whatever was found */
        st.model_crc = tl_crc32(0, file, (int32_t)m_len);
        st.cfg = m.cfg;
        st.lls_variant = lls_variant;
        st.step = m.step + 1;
        if (tl_ckpt_save(&f, &m, &st, slots) == TL_OK && fail_at == 0) {
            tl_ckpt_state again;
            memset(&again, 0, sizeof(again));
            again.model_size = st.model_size;
            again.model_crc = st.model_crc;
            tl_ckpt_slot fresh[2];
            if (tl_ckpt_scan(&f, fresh) != TL_OK ||
                tl_ckpt_restore(&f, &m, &again, lls_variant, fresh, &found) != TL_OK ||
                found != TL_CKPT_RESTORED || again.generation != st.generation || m.step != st.step)
                abort();              /* a save that said yes must be what a restore finds */
        }
    }
    free(file);
    return 0;
}
