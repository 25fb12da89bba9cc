/* libFuzzer target: the board's protocol dispatcher (tl_proto_dev_rx / tl_proto_dev_handle).
 *
 * Random bytes alone would almost never get past the frame CRC, so the input is a small script
 * the harness turns into wire traffic (CRCs filled in), with one record kind for raw bytes:
 *   byte 0      set-up: bit0 stage the input in the arena (input_cap 0), bit1 checkpoint flash,
 *               bit2 the first LOAD_FILE record is the model in flash (cfg.rom) instead,
 *               bit3 keep the model files' own CRC as is (clear: it is recomputed, so mutated
 *               files reach the loader's parser rather than stopping at TL_ERR_CRC)
 *   records     u8 kind, u16 len (LE), len bytes:
 *     0xF0 LOAD_FILE  the bytes are a model file: LOAD_BEGIN (size, its CRC), LOAD_DATA, LOAD_END
 *     0xF1 RUN        u8 mode, i8 label, then input bytes: INPUT chunks, then TRAIN (mode bit0) or
 *                     EVAL with the length and CRC of those bytes; mode bit1 (without bit0):
 *                     EVAL_EXIT instead, first layer = the label byte (u8), threshold_q16 =
 *                     (mode >> 2) * 1057 (0 .. 66591: out of range above TL_EXIT_NEVER_Q16)
 *     0xF2 RAW        the bytes go to tl_proto_dev_rx unchanged (SLIP, CRC, length errors)
 *     0xF3 REPEAT     the previous command's wire bytes again (the retransmission cache)
 *     other           a command with that opcode and the bytes as payload, valid frame
 * Checked on every answer: the device only ever sends frames that decode and pass the CRC and
 * length checks, and the flash is only used as NOR allows (sector-aligned erase, programs within
 * one page, everything inside the region); a violation aborts, which libFuzzer reports. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tinylls.h"
#include "tl_proto_api.h"
#include "fix_crc.h"

enum {
    BLOB_CAP = 1 << 16, ARENA_CAP = 1 << 17, INPUT_CAP = 1 << 14,
    FLASH_SECTOR = 1024, FLASH_PAGE = 256, FLASH_SIZE = 64 * 1024,
    KIND_LOAD_FILE = 0xF0, KIND_RUN = 0xF1, KIND_RAW = 0xF2, KIND_REPEAT = 0xF3
};

static uint32_t blob[BLOB_CAP / 4];
static uint64_t arena[ARENA_CAP / 8];
static int8_t input_buf[INPUT_CAP];
static tl_layer layers[TL_MAX_LAYERS];
static tl_proto_dev dev;
static tl_proto_dec answers;          /* the host's view of what the device sends */
static uint8_t flash_mem[FLASH_SIZE];
static uint8_t wire[TL_PROTO_MAX_WIRE];
static int32_t wire_n;
static uint16_t seq;

static void device_write(void *user, const uint8_t *data, int32_t n)
{
    (void)user;
    int32_t used = 0, ev = 0;
    while (n > 0) {
        tl_proto_dec_feed(&answers, data, n, &used, &ev);
        data += used;
        n -= used;
        if (ev == TL_PROTO_EV_ERROR)
            abort();                  /* the device sent a frame the host cannot decode */
        if (ev == TL_PROTO_EV_FRAME && answers.n > 0) {
            tl_proto_hdr h;
            if (tl_proto_check(answers.buf, answers.n, &h) != TL_OK || !(h.flags & TL_PROTO_F_RESP))
                abort();
        }
    }
}

static int32_t flash_erase(void *user, uint32_t addr)
{
    (void)user;
    if (addr % FLASH_SECTOR || addr >= FLASH_SIZE)
        abort();
    memset(flash_mem + addr, 0xFF, FLASH_SECTOR);
    return 0;
}

static int32_t flash_program(void *user, uint32_t addr, const uint8_t *data, int32_t n)
{
    (void)user;
    if (n < 0 || addr >= FLASH_SIZE || (uint32_t)n > FLASH_SIZE - addr ||
        (n > 0 && addr / FLASH_PAGE != (addr + (uint32_t)n - 1) / FLASH_PAGE))
        abort();
    for (int32_t i = 0; i < n; i++)
        flash_mem[addr + (uint32_t)i] &= data[i];
    return 0;
}

static int32_t flash_read(void *user, uint32_t addr, uint8_t *out, int32_t n)
{
    (void)user;
    if (n < 0 || addr > FLASH_SIZE || (uint32_t)n > FLASH_SIZE - addr)
        abort();
    memcpy(out, flash_mem + addr, (size_t)n);
    return 0;
}

static const tl_flash flash = {FLASH_SIZE, FLASH_SECTOR, FLASH_PAGE, flash_erase, flash_program, flash_read, NULL};

static void send(uint8_t op, const uint8_t *payload, int32_t len)
{
    if (len > TL_PROTO_MAX_PAYLOAD)
        len = TL_PROTO_MAX_PAYLOAD;
    if (tl_proto_encode(op, 0, seq++, payload, len, wire, (int32_t)sizeof(wire), &wire_n) != TL_OK)
        abort();                      /* a payload within MAX_PAYLOAD must always encode */
    tl_proto_dev_rx(&dev, wire, wire_n);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}

static void load_file(const uint8_t *file, int32_t n)
{
    uint8_t p[4 + TL_PROTO_MAX_DATA];
    put_u32(p, (uint32_t)n);
    put_u32(p + 4, tl_crc32(0, file, n));
    send(TL_PROTO_OP_LOAD_BEGIN, p, 8);
    for (int32_t off = 0; off < n; off += TL_PROTO_MAX_DATA) {
        int32_t k = n - off < TL_PROTO_MAX_DATA ? n - off : TL_PROTO_MAX_DATA;
        put_u32(p, (uint32_t)off);
        memcpy(p + 4, file + off, (size_t)k);
        send(TL_PROTO_OP_LOAD_DATA, p, 4 + k);
    }
    send(TL_PROTO_OP_LOAD_END, NULL, 0);
}

/* LOAD_BEGIN naming the model in flash (its size and CRC), no data, LOAD_END */
static void load_rom_named(const uint8_t *rom, int32_t n)
{
    uint8_t p[8];
    put_u32(p, (uint32_t)n);
    put_u32(p + 4, tl_crc32(0, rom, n));
    send(TL_PROTO_OP_LOAD_BEGIN, p, 8);
    send(TL_PROTO_OP_LOAD_END, NULL, 0);
}

static void run(const uint8_t *rec, int32_t n)
{
    if (n < 2)
        return;
    int32_t train = rec[0] & 1;
    int32_t label = (int8_t)rec[1];
    const uint8_t *x = rec + 2;
    int32_t len = n - 2;
    uint8_t p[4 + TL_PROTO_MAX_DATA];
    for (int32_t off = 0; off < len; off += TL_PROTO_MAX_DATA) {
        int32_t k = len - off < TL_PROTO_MAX_DATA ? len - off : TL_PROTO_MAX_DATA;
        put_u32(p, (uint32_t)off);
        memcpy(p + 4, x + off, (size_t)k);
        send(TL_PROTO_OP_INPUT, p, 4 + k);
    }
    if (!train && (rec[0] & 2)) {
        put_u32(p, (uint32_t)rec[1]);
        put_u32(p + 4, (uint32_t)(rec[0] >> 2) * 1057u);
        put_u32(p + 8, (uint32_t)len);
        put_u32(p + 12, tl_crc32(0, x, len));
        send(TL_PROTO_OP_EVAL_EXIT, p, 16);
        return;
    }
    put_u32(p, train ? (uint32_t)label : 1u);
    put_u32(p + 4, (uint32_t)len);
    put_u32(p + 8, tl_crc32(0, x, len));
    send(train ? TL_PROTO_OP_TRAIN : TL_PROTO_OP_EVAL, p, 12);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > (1u << 20))
        return 0;
    uint8_t setup = data[0];
    size_t pos = 1;
    tl_proto_dev_cfg cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.blob = (uint8_t *)blob;
    cfg.blob_cap = BLOB_CAP;
    cfg.layers = layers;
    cfg.max_layers = TL_MAX_LAYERS;
    cfg.arena = arena;
    cfg.arena_cap = ARENA_CAP;
    cfg.input = (setup & 1) ? NULL : input_buf;
    cfg.input_cap = (setup & 1) ? 0 : INPUT_CAP;
    cfg.write = device_write;
    cfg.counter_kind = TL_PROTO_COUNTER_NONE;
    cfg.board = "fuzz";
    memset(flash_mem, 0xFF, sizeof(flash_mem));
    cfg.flash = (setup & 2) ? &flash : NULL;
    uint8_t *rom = NULL;
    int fix_files = !(setup & 8);
    int rom_taken = !(setup & 4);
    tl_proto_dec_init(&answers);
    seq = 1;
    wire_n = 0;
    /* the model in flash has to be known at init: take the first LOAD_FILE record's bytes */
    if (!rom_taken) {
        size_t q = pos;
        while (q + 3 <= size) {
            size_t len = (size_t)data[q + 1] | ((size_t)data[q + 2] << 8);
            if (q + 3 + len > size)
                break;
            if (data[q] == KIND_LOAD_FILE) {
                rom = malloc(len ? len : 1);
                memcpy(rom, data + q + 3, len);
                if (fix_files)
                    fix_modelfile_crc(rom, len);
                cfg.rom = rom;
                cfg.rom_size = (int32_t)len;
                break;
            }
            q += 3 + len;
        }
    }
    if (tl_proto_dev_init(&dev, &cfg) != TL_OK) {
        /* a model in flash the board cannot use: the firmware then runs without it */
        cfg.rom = NULL;
        cfg.rom_size = 0;
        if (tl_proto_dev_init(&dev, &cfg) != TL_OK)
            abort();
    }
    while (pos + 3 <= size) {
        uint8_t kind = data[pos];
        size_t len = (size_t)data[pos + 1] | ((size_t)data[pos + 2] << 8);
        pos += 3;
        if (len > size - pos)
            len = size - pos;
        const uint8_t *rec = data + pos;
        pos += len;
        switch (kind) {
        case KIND_LOAD_FILE: {
            if (!rom_taken && cfg.rom) {   /* this one is in "flash": named, not sent */
                rom_taken = 1;
                load_rom_named(cfg.rom, cfg.rom_size);
                break;
            }
            uint8_t *copy = malloc(len ? len : 1);
            memcpy(copy, rec, len);
            if (fix_files)
                fix_modelfile_crc(copy, len);
            load_file(copy, (int32_t)len);
            free(copy);
            break;
        }
        case KIND_RUN:
            run(rec, (int32_t)len);
            break;
        case KIND_RAW:
            tl_proto_dev_rx(&dev, rec, (int32_t)len);
            break;
        case KIND_REPEAT:
            if (wire_n > 0)
                tl_proto_dev_rx(&dev, wire, wire_n);
            break;
        default:
            send(kind, rec, (int32_t)len);
        }
    }
    free(rom);
    return 0;
}
