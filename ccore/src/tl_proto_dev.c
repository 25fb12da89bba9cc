/* tinylls serial protocol, device side: executes commands against the core and answers them.
 *
 * Board-independent: the firmware (firmware/app/main.c) feeds received bytes to tl_proto_dev_rx
 * and provides a write callback; host tests run the very same code through cffi.
 *
 * Robustness rules (see tl_proto_api.h):
 *  - a frame that fails SLIP decoding, length or CRC checks is answered with a NAK that is not
 *    cached, and changes no state;
 *  - a command is executed at most once: the response to the last command is cached with the
 *    command's (seq, crc); a retransmission gets the cached bytes again (for READ_WEIGHTS the
 *    cache holds the answer's head and window: its data are read from the model again, which no
 *    command can have changed in between, so the bytes on the wire are the same);
 *  - a command with a bad argument (size, label, offset, unknown op) gets a NAK with a code and
 *    changes nothing.
 */
#include "tinylls.h"
#include "tl_proto_api.h"
#include "tl_bytes.h"
#include "tl_slip.h"
#include "tl_support.h"

/* ---------------------------------------------------------------- helpers */
static uint32_t counter_now(const tl_proto_dev *dev)
{
    return dev->cfg.counter ? dev->cfg.counter(dev->cfg.user) : 0u;
}

/* Commands and senders are kept out of line: the dispatcher's own frame lies under every training
 * step (the deepest stack), a command's locals only while that command runs. */
#if defined(__GNUC__)
#define TL_NOINLINE __attribute__((noinline))
#else
#define TL_NOINLINE
#endif

/* A frame on its way out: SLIP-escaped into the write callback through a small buffer, with the
 * CRC32 of the bytes so far (tx_end appends it), so an answer need not be held whole in RAM. */
typedef struct {
    tl_proto_dev *dev;
    uint32_t crc;
    int32_t k;
    uint8_t out[64];
} tx_frame;

static void tx_flush(tx_frame *t)
{
    t->dev->cfg.write(t->dev->cfg.user, t->out, t->k);
    t->dev->stats.bytes_tx += (uint32_t)t->k;
    t->k = 0;
}

static void tx_begin(tx_frame *t, tl_proto_dev *dev)
{
    t->dev = dev;
    t->crc = 0;
    t->k = 0;
    t->out[t->k++] = TL_SLIP_END;
}

/* frame bytes: escaped, and folded into the CRC when crc != 0 */
static void tx_put(tx_frame *t, const uint8_t *p, int32_t n, int32_t crc)
{
    if (crc)
        t->crc = tl_crc32(t->crc, p, n);
    while (n > 0) { /* leaves one byte of the buffer for the closing END */
        int32_t used;
        t->k += tl_slip_escape(p, n, t->out + t->k, (int32_t)sizeof(t->out) - 1 - t->k, &used);
        p += used;
        n -= used;
        if (n > 0)
            tx_flush(t);
    }
}

/* the CRC of everything put so far, then END */
static void tx_end(tx_frame *t)
{
    uint8_t c[4];
    tl_put_u32(c, t->crc);
    tx_put(t, c, 4, 0);
    if (t->k > (int32_t)sizeof(t->out) - 1)
        tx_flush(t);
    t->out[t->k++] = TL_SLIP_END;
    tx_flush(t);
}

/* SLIP-escapes a whole unescaped frame (CRC included) straight into the write callback. */
static void send_frame(tl_proto_dev *dev, const uint8_t *frame, int32_t n)
{
    tx_frame t;
    tx_begin(&t, dev);
    tx_put(&t, frame, n, 0);
    if (t.k > (int32_t)sizeof(t.out) - 1)
        tx_flush(&t);
    t.out[t.k++] = TL_SLIP_END;
    tx_flush(&t);
}

/* A short uncached response: NAK for a broken frame, or BUSY. */
static TL_NOINLINE void send_small(tl_proto_dev *dev, uint8_t op, uint8_t flags, uint16_t seq, tl_status status,
                       int32_t detail, int32_t with_status)
{
    uint8_t frame[TL_PROTO_HDR_BYTES + 8 + TL_PROTO_CRC_BYTES];
    uint8_t payload[8];
    int32_t n = 0;
    tl_put_u32(payload, (uint32_t)status);
    tl_put_u32(payload + 4, (uint32_t)detail);
    if (tl_proto_build(op, flags, seq, payload, with_status ? 8 : 0, frame, (int32_t)sizeof(frame), &n)
        == TL_OK)
        send_frame(dev, frame, n);
}

/* ---------------------------------------------------------------- weights stream view */
/* The loaded model as the READ_WEIGHTS stream sees it: lls_m arrays are counted with the length
 * the model file gave them (SET_CONFIG may switch an LLS-M/MxM file to PLAIN, which ignores them). */
static tl_model stream_view(const tl_proto_dev *dev)
{
    tl_model v = dev->model;
    v.cfg.variant = dev->file_variant;
    return v;
}

/* ---------------------------------------------------------------- init */
static tl_status load_rom(tl_proto_dev *dev, int32_t *detail);

/* ---------------------------------------------------------------- checkpoints */
/* The newest valid checkpoint of the loaded model into it (dev->ckpt_found says what was found). */
static TL_NOINLINE tl_status ckpt_restore(tl_proto_dev *dev)
{
    tl_ckpt_state st = dev->ckpt;
    st.model_size = dev->model_size;
    st.model_crc = dev->model_crc;
    int32_t found = TL_CKPT_NONE;
    tl_status s = tl_ckpt_restore(dev->cfg.flash, &dev->model, &st, dev->file_variant, dev->ckpt_slots, &found);
    if (s != TL_OK)
        return s;
    dev->ckpt_found = found;
    if (found == TL_CKPT_RESTORED)
        dev->ckpt = st;
    else if (found == TL_CKPT_OTHER_MODEL)         /* INFO shows whose checkpoint it is */
        for (int32_t i = 0; i < TL_CKPT_TAG_WORDS; i++)
            dev->ckpt.tag[i] = st.tag[i];
    return TL_OK;
}

static TL_NOINLINE tl_status ckpt_save(tl_proto_dev *dev)
{
    tl_ckpt_state *st = &dev->ckpt;
    st->step = dev->model.step;
    st->model_size = dev->model_size;
    st->model_crc = dev->model_crc;
    st->cfg = dev->model.cfg;
    st->lls_variant = dev->file_variant;
    tl_status s = tl_ckpt_save(dev->cfg.flash, &dev->model, st, dev->ckpt_slots);
    dev->ckpt_status = s;
    if (s == TL_OK)
        dev->ckpt_saves++;
    return s;
}

tl_status tl_proto_dev_init(tl_proto_dev *dev, const tl_proto_dev_cfg *cfg)
{
    if (!dev || !cfg || !cfg->write || !cfg->blob || cfg->blob_cap <= 0 || !cfg->layers
        || cfg->max_layers <= 0 || !cfg->arena || cfg->arena_cap < 0)
        return TL_ERR_ARG;
    /* the input is a buffer of its own, or (NULL, 0) staged in the arena */
    if (cfg->input ? cfg->input_cap <= 0 : cfg->input_cap != 0)
        return TL_ERR_ARG;
    if (((uintptr_t)cfg->blob & 3u) != 0 || ((uintptr_t)cfg->arena & 7u) != 0)
        return TL_ERR_ARG;      /* the loaders use int32 tensors in place; the arena needs 8 */
    if (cfg->rom ? cfg->rom_size <= 0 || ((uintptr_t)cfg->rom & 3u) != 0 : cfg->rom_size != 0)
        return TL_ERR_ARG;
    uint8_t *p = (uint8_t *)dev;
    for (uint32_t i = 0; i < sizeof(*dev); i++)
        p[i] = 0;
    dev->cfg = *cfg;
    tl_status s = tl_proto_dec_init(&dev->dec);
    if (s != TL_OK)
        return s;
    if (cfg->flash) {               /* a flash that cannot even be read is no flash */
        if (tl_ckpt_scan(cfg->flash, dev->ckpt_slots) != TL_OK)
            dev->cfg.flash = 0;
    }
    if (!cfg->rom)
        return TL_OK;
    dev->rom_crc = tl_crc32(0, cfg->rom, cfg->rom_size);
    int32_t detail = 0;
    s = load_rom(dev, &detail);
    if (s == TL_OK && dev->cfg.flash)
        ckpt_restore(dev);          /* power back: the newest checkpoint of the model in flash */
    return s;
}

/* ---------------------------------------------------------------- commands */
/* Response under construction in dev->resp: payload starts at resp + 8 with the int32 status.
 * Every write is bounds-checked against the cache (TL_PROTO_MAX_RESP); one that does not fit sets
 * overflow and the command is answered with a NAK TL_PROTO_ERR_BUF instead. */
typedef struct {
    uint8_t *p;             /* payload start */
    int32_t n;              /* payload bytes so far */
    int32_t cap;            /* payload bytes resp has room for */
    int32_t overflow;
} resp_buf;

static int32_t r_room(resp_buf *r, int32_t k)
{
    if (r->n + k > r->cap) {
        r->overflow = 1;
        return 0;
    }
    return 1;
}

static void r_u32(resp_buf *r, uint32_t v)
{
    if (!r_room(r, 4))
        return;
    tl_put_u32(r->p + r->n, v);
    r->n += 4;
}

static void r_u16(resp_buf *r, uint32_t v)
{
    if (!r_room(r, 2))
        return;
    tl_put_u16(r->p + r->n, v);
    r->n += 2;
}

static void r_u8(resp_buf *r, uint32_t v)
{
    if (!r_room(r, 1))
        return;
    r->p[r->n++] = (uint8_t)v;
}

static void r_str16(resp_buf *r, const char *s)
{
    if (!r_room(r, 16))
        return;
    int32_t i = 0;
    for (; s && s[i] && i < 15; i++)
        r->p[r->n + i] = (uint8_t)s[i];
    for (; i < 16; i++)
        r->p[r->n + i] = 0;
    r->n += 16;
}

/* A NAK: status then detail. Returns the status for the caller's convenience. */
static tl_status nak(resp_buf *r, tl_status status, int32_t detail)
{
    r->n = 0;
    r->overflow = 0;
    r_u32(r, (uint32_t)status);
    r_u32(r, (uint32_t)detail);
    return status;
}

static TL_NOINLINE tl_status cmd_info(tl_proto_dev *dev, uint32_t len, resp_buf *r)
{
    if (len != 0)
        return nak(r, TL_PROTO_ERR_PAYLOAD, 0);
    int32_t arena_needed = 0, weights_bytes = 0;
    uint32_t weights_crc = 0;
    const tl_layer *L0 = dev->loaded ? &dev->model.layers[0] : 0;
    const tl_train_cfg *tc = dev->loaded ? &dev->model.cfg : 0;
    if (dev->loaded) {
        tl_model v = stream_view(dev);
        arena_needed = tl_model_arena_bytes(&dev->model);
        tl_proto_weights_size(&v, &weights_bytes);
        tl_proto_weights_crc(&v, &weights_crc);
    }
    r_u32(r, TL_OK);
    r_u16(r, TL_PROTO_VERSION);
    r_u16(r, dev->loaded ? (uint32_t)dev->model.n_layers : 0u);
    r_u32(r, (dev->loaded ? (uint32_t)TL_PROTO_INFO_LOADED : 0u) |
             (dev->cfg.input ? 0u : (uint32_t)TL_PROTO_INFO_INPUT_IN_ARENA) |
             (dev->loaded && dev->model_in_rom ? (uint32_t)TL_PROTO_INFO_MODEL_IN_FLASH : 0u));
    r_u32(r, (uint32_t)arena_needed);
    r_u32(r, (uint32_t)dev->cfg.arena_cap);
    r_u32(r, (uint32_t)dev->cfg.blob_cap);
    r_u32(r, (uint32_t)dev->cfg.input_cap);
    r_u32(r, dev->cfg.free_ram);
    r_u32(r, dev->loaded ? dev->model_size : 0u);
    r_u32(r, dev->loaded ? dev->model_crc : 0u);
    r_u32(r, (uint32_t)weights_bytes);
    r_u32(r, weights_crc);
    r_u32(r, dev->loaded ? dev->model.step : 0u);
    r_u32(r, dev->loaded ? (uint32_t)dev->model.classes : 0u);
    r_u32(r, L0 ? (uint32_t)L0->in_h : 0u);
    r_u32(r, L0 ? (uint32_t)L0->in_w : 0u);
    r_u32(r, L0 ? (uint32_t)L0->in_c : 0u);
    r_u32(r, dev->cfg.counter_kind);
    r_u32(r, TL_PROTO_MAX_PAYLOAD);
    r_str16(r, dev->cfg.board);
    r_str16(r, tl_version());
    r_u32(r, tc ? (uint32_t)tc->basis : 0u);
    r_u32(r, tc ? (uint32_t)tc->variant : 0u);
    r_u32(r, tc ? (uint32_t)tc->rounding : 0u);
    r_u32(r, tc ? tc->seed : 0u);
    r_u32(r, tc ? tc->basis_seed : 0u);
    r_u32(r, tc ? (uint32_t)tc->inv_tau_q8 : 0u);
    r_u32(r, (uint32_t)dev->cfg.rom_size);
    r_u32(r, dev->rom_crc);
    r_u32(r, dev->cfg.stack_used ? dev->cfg.stack_used(dev->cfg.user) : 0u);
    r_u32(r, dev->cfg.flash ? 1u : 0u);
    r_u32(r, (uint32_t)dev->ckpt_found);
    r_u32(r, (uint32_t)dev->ckpt_status);
    r_u32(r, dev->ckpt_saves);
    r_u32(r, dev->ckpt.every);
    r_u32(r, dev->ckpt.epoch);
    r_u32(r, dev->ckpt.index);
    for (int32_t i = 0; i < TL_CKPT_TAG_WORDS; i++)
        r_u32(r, dev->ckpt.tag[i]);
    for (int32_t k = 0; k < 2; k++) {
        const tl_ckpt_slot *sl = &dev->ckpt_slots[k];
        r_u32(r, (uint32_t)sl->state);
        r_u32(r, sl->generation);
        r_u32(r, sl->step);
        r_u32(r, sl->payload_crc);
    }
    return TL_OK;
}

static TL_NOINLINE tl_status cmd_load_begin(tl_proto_dev *dev, const uint8_t *pl, uint32_t len, resp_buf *r)
{
    if (len != 8)
        return nak(r, TL_PROTO_ERR_PAYLOAD, 8);
    uint32_t size = tl_get_u32(pl), crc = tl_get_u32(pl + 4);
    const int32_t resident = dev->cfg.rom && size == (uint32_t)dev->cfg.rom_size && crc == dev->rom_crc;
    if (!resident && size > (uint32_t)dev->cfg.blob_cap)
        return nak(r, TL_PROTO_ERR_TOO_BIG, dev->cfg.blob_cap);
    if (size < 4)
        return nak(r, TL_PROTO_ERR_RANGE, 4);
    /* From here the blob is overwritten: the previous model is gone whatever follows. */
    dev->loaded = 0;
    dev->loading = 1;
    dev->loading_rom = resident;
    dev->load_size = size;
    dev->load_crc = crc;
    r_u32(r, TL_OK);
    r_u32(r, (uint32_t)resident);
    return TL_OK;
}

static TL_NOINLINE tl_status cmd_load_data(tl_proto_dev *dev, const uint8_t *pl, uint32_t len, resp_buf *r)
{
    if (len < 4)
        return nak(r, TL_PROTO_ERR_PAYLOAD, 4);
    if (!dev->loading)
        return nak(r, TL_PROTO_ERR_NO_LOAD, 0);
    if (dev->loading_rom)
        return nak(r, TL_PROTO_ERR_IN_FLASH, 0);
    uint32_t off = tl_get_u32(pl), cnt = len - 4;
    if (off > dev->load_size || cnt > dev->load_size - off)
        return nak(r, TL_PROTO_ERR_RANGE, (int32_t)dev->load_size);
    for (uint32_t i = 0; i < cnt; i++)
        dev->cfg.blob[off + i] = pl[4 + i];
    r_u32(r, TL_OK);
    return TL_OK;
}

/* Makes a parsed model the loaded one once it fits the arena and the input buffer (the input is
 * staged in the arena when there is none). On failure *detail says what was needed (bytes) and
 * the device state is left as it was. */
static tl_status install(tl_proto_dev *dev, const tl_model *m, uint32_t size, uint32_t crc, int32_t in_rom,
                         int32_t *detail)
{
    int32_t arena = tl_model_arena_bytes(m);
    *detail = arena < 0 ? 0 : arena;
    if (arena < 0)
        return arena;
    if (arena > dev->cfg.arena_cap)
        return TL_PROTO_ERR_ARENA;
    const tl_layer *L0 = &m->layers[0];
    int32_t in_bytes = L0->in_h * L0->in_w * L0->in_c;
    int8_t *input = dev->cfg.input;
    if (input) {
        if (in_bytes > dev->cfg.input_cap) {
            *detail = in_bytes;
            return TL_PROTO_ERR_INPUT_CAP;
        }
    } else {
        input = (int8_t *)dev->cfg.arena + tl_model_input_offset(m);   /* inside [0, arena) */
    }
    dev->model = *m;
    dev->adapt_active = 0;
    dev->loaded = 1;
    dev->loading = 0;
    dev->loading_rom = 0;
    dev->model_in_rom = in_rom;
    dev->model_size = size;
    dev->model_crc = crc;
    dev->input = input;
    dev->input_bytes = in_bytes;
    dev->file_variant = m->cfg.variant;     /* the loader derives it from the lls_m arrays */
    dev->stats.loads++;
    return TL_OK;
}

/* The model in flash: trainable tensors copied to blob afresh, the rest read where it lies. */
static tl_status load_rom(tl_proto_dev *dev, int32_t *detail)
{
    tl_model m;
    int32_t need = 0;
    tl_status s = tl_modelfile_load_rom(dev->cfg.rom, dev->cfg.rom_size, dev->cfg.blob, dev->cfg.blob_cap, &need,
                                        dev->cfg.layers, dev->cfg.max_layers, &m);
    *detail = s == TL_ERR_RAM ? need : 0;
    if (s != TL_OK)
        return s;
    return install(dev, &m, (uint32_t)dev->cfg.rom_size, dev->rom_crc, 1, detail);
}

static TL_NOINLINE tl_status cmd_load_end(tl_proto_dev *dev, uint32_t len, resp_buf *r)
{
    if (len != 0)
        return nak(r, TL_PROTO_ERR_PAYLOAD, 0);
    if (!dev->loading)
        return nak(r, TL_PROTO_ERR_NO_LOAD, 0);
    int32_t detail = 0;
    tl_status s;
    if (dev->loading_rom) {
        s = load_rom(dev, &detail);
    } else {
        if (tl_crc32(0, dev->cfg.blob, (int32_t)dev->load_size) != dev->load_crc)
            return nak(r, TL_PROTO_ERR_MODEL_CRC, 0);
        tl_model m;
        s = tl_modelfile_load(dev->cfg.blob, (int32_t)dev->load_size, dev->cfg.layers, dev->cfg.max_layers, &m);
        if (s == TL_OK)
            s = install(dev, &m, dev->load_size, dev->load_crc, 0, &detail);
    }
    if (s != TL_OK)
        return nak(r, s, detail);
    const tl_model *mm = &dev->model;
    const int32_t arena = tl_model_arena_bytes(mm);
    r_u32(r, TL_OK);
    r_u32(r, (uint32_t)arena);
    r_u16(r, (uint32_t)mm->n_layers);
    r_u16(r, (uint32_t)mm->classes);
    return TL_OK;
}

static TL_NOINLINE tl_status cmd_input(tl_proto_dev *dev, const uint8_t *pl, uint32_t len, resp_buf *r)
{
    if (len < 4)
        return nak(r, TL_PROTO_ERR_PAYLOAD, 4);
    if (!dev->loaded)
        return nak(r, TL_PROTO_ERR_NO_MODEL, 0);
    uint32_t off = tl_get_u32(pl), cnt = len - 4, cap = (uint32_t)dev->input_bytes;
    if (off > cap || cnt > cap - off)
        return nak(r, TL_PROTO_ERR_RANGE, dev->input_bytes);
    for (uint32_t i = 0; i < cnt; i++)
        dev->input[off + i] = (int8_t)pl[4 + i];
    r_u32(r, TL_OK);
    return TL_OK;
}

/* Shared checks of TRAIN / EVAL: model, size and CRC of the staged input. */
static tl_status check_input(tl_proto_dev *dev, uint32_t input_len, uint32_t input_crc, resp_buf *r)
{
    if (!dev->loaded)
        return nak(r, TL_PROTO_ERR_NO_MODEL, 0);
    if (input_len != (uint32_t)dev->input_bytes)
        return nak(r, TL_PROTO_ERR_SIZE, dev->input_bytes);
    if (tl_crc32(0, (const uint8_t *)dev->input, dev->input_bytes) != input_crc)
        return nak(r, TL_PROTO_ERR_INPUT_CRC, 0);
    return TL_OK;
}

static void put_result(tl_proto_dev *dev, const tl_result *res, uint32_t insn, resp_buf *r)
{
    int32_t classes = dev->model.classes, layers = dev->model.n_layers;
    r_u32(r, TL_OK);
    r_u32(r, insn);
    r_u32(r, dev->model.step);
    r_u32(r, (uint32_t)res->pred);
    r_u16(r, (uint32_t)classes);
    r_u16(r, (uint32_t)layers);
    for (int32_t c = 0; c < classes; c++)
        r_u8(r, (uint8_t)(int8_t)res->logits[c]);
    for (int32_t l = 0; l < layers; l++)
        r_u8(r, (uint8_t)(int8_t)res->local_pred[l]);
}

/* The step's tl_result (648 bytes) goes in the tail of the decoder's frame buffer rather than on
 * the stack, which is deepest during a step: the buffer is idle until this command is answered
 * (the decoder is fed again only after tl_proto_dev_handle returns), and the command's payload
 * was read before the step starts (the TRAIN/EVAL frame, 24 bytes, sits at its head anyway). */
typedef char result_fits_in_frame_buffer
    [TL_PROTO_HDR_BYTES + 12 + TL_PROTO_CRC_BYTES + sizeof(tl_result) + 3 <= sizeof(((tl_proto_dec *)0)->buf) ? 1 : -1];

static tl_result *result_slot(tl_proto_dev *dev)
{
    uintptr_t end = (uintptr_t)(dev->dec.buf + sizeof(dev->dec.buf));
    return (tl_result *)(void *)((end - sizeof(tl_result)) & ~(uintptr_t)3);
}

/* Runs one training step (label >= 0) or inference (label < 0) on the staged input, timed by the
 * board's counter, records it in the statistics and answers with the result. */
static tl_status run_step(tl_proto_dev *dev, int32_t label, int32_t with_local, resp_buf *r)
{
    tl_ctx ctx;
    tl_result *res = result_slot(dev);
    ctx.buf = dev->cfg.arena;
    ctx.size = dev->cfg.arena_cap;
    const int train = label >= 0;
    dev->adapt_active = 0;                  /* the step overwrites the arena's statistics */
    const uint32_t t0 = counter_now(dev);
    const tl_status s = train ? tl_model_train_step(&dev->model, &ctx, dev->input, label, res)
                              : tl_model_infer(&dev->model, &ctx, dev->input, with_local, res);
    const uint32_t insn = counter_now(dev) - t0;
    if (s != TL_OK)
        return nak(r, s, 0);
    uint32_t *last = train ? &dev->stats.last_train_insn : &dev->stats.last_infer_insn;
    uint32_t *min = train ? &dev->stats.min_train_insn : &dev->stats.min_infer_insn;
    if (train)
        dev->stats.train_steps++;
    else
        dev->stats.evals++;
    *last = insn;
    if (*min == 0 || insn < *min)
        *min = insn;
    put_result(dev, res, insn, r);
    return TL_OK;
}

static TL_NOINLINE tl_status cmd_train(tl_proto_dev *dev, const uint8_t *pl, uint32_t len, resp_buf *r)
{
    if (len != 12)
        return nak(r, TL_PROTO_ERR_PAYLOAD, 12);
    int32_t label = (int32_t)tl_get_u32(pl);
    tl_status s = check_input(dev, tl_get_u32(pl + 4), tl_get_u32(pl + 8), r);
    if (s != TL_OK)
        return s;
    if (label < 0 || label >= dev->model.classes)
        return nak(r, TL_PROTO_ERR_LABEL, dev->model.classes);
    s = run_step(dev, label, 1, r);
    if (s != TL_OK)
        return s;
    dev->ckpt.index++;
    /* saved before the answer: once the host has it, the checkpoint holding this step is durable */
    if (dev->cfg.flash && dev->ckpt.every != 0 && dev->model.step % dev->ckpt.every == 0)
        ckpt_save(dev);
    return TL_OK;
}

static TL_NOINLINE tl_status cmd_eval(tl_proto_dev *dev, const uint8_t *pl, uint32_t len, resp_buf *r)
{
    if (len != 12)
        return nak(r, TL_PROTO_ERR_PAYLOAD, 12);
    int32_t with_local = tl_get_u32(pl) != 0;
    tl_status s = check_input(dev, tl_get_u32(pl + 4), tl_get_u32(pl + 8), r);
    if (s != TL_OK)
        return s;
    return run_step(dev, -1, with_local, r);
}

/* EVAL_EXIT: early-exit inference (tl_model_infer_exit) on the staged input, timed like EVAL and
 * counted as one; the EVAL result, then the exit layer. */
static TL_NOINLINE tl_status cmd_eval_exit(tl_proto_dev *dev, const uint8_t *pl, uint32_t len, resp_buf *r)
{
    if (len != 16)
        return nak(r, TL_PROTO_ERR_PAYLOAD, 16);
    const int32_t first = (int32_t)tl_get_u32(pl), threshold = (int32_t)tl_get_u32(pl + 4);
    tl_status s = check_input(dev, tl_get_u32(pl + 8), tl_get_u32(pl + 12), r);
    if (s != TL_OK)
        return s;
    tl_ctx ctx;
    tl_result *res = result_slot(dev);
    int32_t exit_layer = -1;
    ctx.buf = dev->cfg.arena;
    ctx.size = dev->cfg.arena_cap;
    const uint32_t t0 = counter_now(dev);
    s = tl_model_infer_exit(&dev->model, &ctx, dev->input, first, threshold, res, &exit_layer, NULL);
    const uint32_t insn = counter_now(dev) - t0;
    if (s != TL_OK)
        return nak(r, s, 0);
    dev->stats.evals++;
    dev->stats.last_infer_insn = insn;
    if (dev->stats.min_infer_insn == 0 || insn < dev->stats.min_infer_insn)
        dev->stats.min_infer_insn = insn;
    put_result(dev, res, insn, r);
    r_u32(r, (uint32_t)exit_layer);
    return TL_OK;
}

static TL_NOINLINE tl_status cmd_stats(tl_proto_dev *dev, uint32_t len, resp_buf *r)
{
    if (len != 0)
        return nak(r, TL_PROTO_ERR_PAYLOAD, 0);
    const tl_proto_stats *st = &dev->stats;
    const uint32_t v[TL_PROTO_N_STATS] = {
        st->frames_ok, st->frames_crc, st->frames_oversize, st->frames_malformed, st->naks,
        st->duplicates, st->unknown_ops, st->train_steps, st->evals, st->last_train_insn,
        st->last_infer_insn, st->min_train_insn, st->min_infer_insn, st->loads, st->bytes_rx,
        st->bytes_tx};
    r_u32(r, TL_OK);
    for (int32_t i = 0; i < TL_PROTO_N_STATS; i++)
        r_u32(r, v[i]);
    return TL_OK;
}

static TL_NOINLINE tl_status cmd_read_weights(tl_proto_dev *dev, const uint8_t *pl, uint32_t len, resp_buf *r)
{
    if (len != 8)
        return nak(r, TL_PROTO_ERR_PAYLOAD, 8);
    if (!dev->loaded)
        return nak(r, TL_PROTO_ERR_NO_MODEL, 0);
    int32_t total = 0;
    tl_model v = stream_view(dev);
    tl_proto_weights_size(&v, &total);
    uint32_t off = tl_get_u32(pl), max = tl_get_u32(pl + 4);
    if (off > (uint32_t)total)
        return nak(r, TL_PROTO_ERR_RANGE, total);
    uint32_t room = TL_PROTO_MAX_PAYLOAD - 12, n = (uint32_t)total - off;
    if (n > max)
        n = max;
    if (n > room)
        n = room;
    r_u32(r, TL_OK);
    r_u32(r, (uint32_t)total);
    r_u32(r, off);
    /* the data follows the cached head when the answer is sent (send_response) */
    dev->resp_weights_off = (int32_t)off;
    dev->resp_weights_n = (int32_t)n;
    return TL_OK;
}

static TL_NOINLINE tl_status cmd_reset(tl_proto_dev *dev, uint32_t len, resp_buf *r)
{
    if (len != 0)
        return nak(r, TL_PROTO_ERR_PAYLOAD, 0);
    uint8_t *p = (uint8_t *)&dev->stats;
    for (uint32_t i = 0; i < sizeof(dev->stats); i++)
        p[i] = 0;
    dev->loaded = 0;
    dev->loading = 0;
    dev->loading_rom = 0;
    dev->input_bytes = 0;
    dev->adapt_active = 0;
    r_u32(r, TL_OK);
    return TL_OK;
}

/* ---------------------------------------------------------------- camera adaptation (tl_adapt.c) */
static tl_ctx arena_ctx(const tl_proto_dev *dev)
{
    tl_ctx ctx;
    ctx.buf = dev->cfg.arena;
    ctx.size = dev->cfg.arena_cap;
    return ctx;
}

static int32_t input_in_arena(const tl_proto_dev *dev)
{
    return dev->cfg.input == 0;
}

static TL_NOINLINE tl_status cmd_adapt(tl_proto_dev *dev, const uint8_t *pl, uint32_t len, resp_buf *r)
{
    if (len != 8)
        return nak(r, TL_PROTO_ERR_PAYLOAD, 8);
    if (!dev->loaded)
        return nak(r, TL_PROTO_ERR_NO_MODEL, 0);
    const uint32_t action = tl_get_u32(pl);
    const int32_t layer = (int32_t)tl_get_u32(pl + 4);
    const tl_ctx ctx = arena_ctx(dev);
    tl_status s;
    if (action == TL_PROTO_ADAPT_BEGIN) {
        dev->adapt_active = 0;
        s = tl_adapt_begin(&dev->model, &ctx, layer, input_in_arena(dev));
        if (s != TL_OK)
            return nak(r, s, layer);
        dev->adapt_active = 1;
        dev->adapt_layer = layer;
        dev->adapt_images = 0;
        r_u32(r, TL_OK);
        return TL_OK;
    }
    if (action != TL_PROTO_ADAPT_APPLY)
        return nak(r, TL_ERR_ARG, (int32_t)action);
    if (!dev->adapt_active || layer != dev->adapt_layer || dev->adapt_images == 0)
        return nak(r, TL_ERR_ARG, layer);
    s = tl_adapt_finish_apply(&dev->model, &ctx, layer, input_in_arena(dev), (int32_t)dev->adapt_images);
    dev->adapt_active = 0;
    if (s != TL_OK)
        return nak(r, s, layer);
    const tl_layer *L = &dev->model.layers[layer];
    uint32_t crc = tl_crc32(0, (const uint8_t *)L->bias, 4 * L->out_c);
    crc = tl_crc32(crc, (const uint8_t *)L->adapt_mult, 4 * L->out_c);
    crc = tl_crc32(crc, (const uint8_t *)L->adapt_shift, 4 * L->out_c);
    r_u32(r, TL_OK);
    r_u32(r, dev->adapt_images);
    r_u32(r, crc);
    return TL_OK;
}

static TL_NOINLINE tl_status cmd_adapt_feed(tl_proto_dev *dev, const uint8_t *pl, uint32_t len, resp_buf *r)
{
    if (len != 8)
        return nak(r, TL_PROTO_ERR_PAYLOAD, 8);
    tl_status s = check_input(dev, tl_get_u32(pl), tl_get_u32(pl + 4), r);
    if (s != TL_OK)
        return s;
    if (!dev->adapt_active)
        return nak(r, TL_ERR_ARG, 0);
    const tl_ctx ctx = arena_ctx(dev);
    const uint32_t t0 = counter_now(dev);
    s = tl_adapt_feed(&dev->model, &ctx, dev->adapt_layer, input_in_arena(dev), dev->input);
    const uint32_t insn = counter_now(dev) - t0;
    if (s != TL_OK)
        return nak(r, s, dev->adapt_layer);
    dev->adapt_images++;
    dev->last_adapt_insn = insn;
    r_u32(r, TL_OK);
    r_u32(r, insn);
    r_u32(r, dev->adapt_images);
    return TL_OK;
}

/* SET_CONFIG field indices (the NAK detail of TL_PROTO_ERR_CONFIG). */
enum { CFG_BASIS, CFG_VARIANT, CFG_ROUNDING, CFG_SEED, CFG_BASIS_SEED, CFG_INV_TAU, CFG_FIELDS };

static TL_NOINLINE tl_status cmd_set_config(tl_proto_dev *dev, const uint8_t *pl, uint32_t len, resp_buf *r)
{
    if (len != 4 * CFG_FIELDS)
        return nak(r, TL_PROTO_ERR_PAYLOAD, 4 * CFG_FIELDS);
    if (!dev->loaded)
        return nak(r, TL_PROTO_ERR_NO_MODEL, 0);
    tl_train_cfg c;
    c.basis = tl_get_i32(pl + 4 * CFG_BASIS);
    c.variant = tl_get_i32(pl + 4 * CFG_VARIANT);
    c.rounding = tl_get_i32(pl + 4 * CFG_ROUNDING);
    c.seed = tl_get_u32(pl + 4 * CFG_SEED);
    c.basis_seed = tl_get_u32(pl + 4 * CFG_BASIS_SEED);
    c.inv_tau_q8 = tl_get_i32(pl + 4 * CFG_INV_TAU);
    /* The ranges of tl_model_prepare, checked here to name the field. */
    if (c.basis < TL_BASIS_SQUARE || c.basis > TL_BASIS_RANDOM)
        return nak(r, TL_PROTO_ERR_CONFIG, CFG_BASIS);
    if (c.variant < TL_LLS_PLAIN || c.variant > TL_LLS_MXM)
        return nak(r, TL_PROTO_ERR_CONFIG, CFG_VARIANT);
    if (c.rounding < TL_ROUND_STOCHASTIC || c.rounding > TL_ROUND_NEAREST)
        return nak(r, TL_PROTO_ERR_CONFIG, CFG_ROUNDING);
    if (c.inv_tau_q8 < 1 || c.inv_tau_q8 > (1 << 16))
        return nak(r, TL_PROTO_ERR_CONFIG, CFG_INV_TAU);
    /* lls_m arrays have the length the file gave them: LLS-M and LLS-MxM cannot be swapped. */
    if (c.variant != TL_LLS_PLAIN && dev->file_variant != TL_LLS_PLAIN && c.variant != dev->file_variant)
        return nak(r, TL_PROTO_ERR_CONFIG, CFG_VARIANT);
    /* The core has the last word (e.g. LLS-M needs lls_m on every trainable hidden layer). Only
     * the derived pooling grids are written, and they depend on the shapes alone. */
    tl_model m = dev->model;
    m.cfg = c;
    tl_status s = tl_model_prepare(&m);
    if (s != TL_OK)
        return nak(r, s, s == TL_ERR_MODEL ? CFG_VARIANT : 0);
    int32_t arena = tl_model_arena_bytes(&m);
    if (arena < 0)
        return nak(r, arena, 0);
    if (arena > dev->cfg.arena_cap)
        return nak(r, TL_PROTO_ERR_ARENA, arena);
    dev->model.cfg = c;
    dev->model.step = 0;    /* a new run: the rounding stream starts again, as in a new CModel */
    r_u32(r, TL_OK);
    return TL_OK;
}

static TL_NOINLINE tl_status cmd_set_lr(tl_proto_dev *dev, const uint8_t *pl, uint32_t len, resp_buf *r)
{
    if (len < 4)
        return nak(r, TL_PROTO_ERR_PAYLOAD, 4);
    if (!dev->loaded)
        return nak(r, TL_PROTO_ERR_NO_MODEL, 0);
    int32_t n = dev->model.n_layers;
    uint32_t want = 4u + 16u * (uint32_t)n;
    if (tl_get_u32(pl) != (uint32_t)n || len != want)
        return nak(r, TL_PROTO_ERR_PAYLOAD, (int32_t)want);
    for (int32_t i = 0; i < n; i++) {           /* all checked before any is applied */
        const uint8_t *e = pl + 4 + 16 * i;
        if (!tl_qmult_ok(tl_get_i32(e), tl_get_i32(e + 4)) || !tl_qmult_ok(tl_get_i32(e + 8), tl_get_i32(e + 12)))
            return nak(r, TL_ERR_QUANT, i);
    }
    for (int32_t i = 0; i < n; i++) {
        const uint8_t *e = pl + 4 + 16 * i;
        tl_layer *L = &dev->model.layers[i];
        L->lr_mult = tl_get_i32(e);
        L->lr_shift = (int8_t)tl_get_i32(e + 4);          /* in [-31, 30]: checked above */
        L->lls_m_lr_mult = tl_get_i32(e + 8);
        L->lls_m_lr_shift = (int8_t)tl_get_i32(e + 12);
    }
    r_u32(r, TL_OK);
    return TL_OK;
}

static TL_NOINLINE tl_status cmd_checkpoint(tl_proto_dev *dev, const uint8_t *pl, uint32_t len, resp_buf *r)
{
    if (len != 4)
        return nak(r, TL_PROTO_ERR_PAYLOAD, 4);
    uint32_t action = tl_get_u32(pl), value = 0;
    if (action > TL_PROTO_CKPT_ERASE)
        return nak(r, TL_PROTO_ERR_RANGE, TL_PROTO_CKPT_ERASE);
    if (!dev->cfg.flash)
        return nak(r, TL_PROTO_ERR_NO_FLASH, 0);
    if (action != TL_PROTO_CKPT_ERASE && !dev->loaded)
        return nak(r, TL_PROTO_ERR_NO_MODEL, 0);
    tl_status s;
    if (action == TL_PROTO_CKPT_SAVE) {
        s = ckpt_save(dev);
        value = dev->ckpt.generation;
    } else if (action == TL_PROTO_CKPT_RESTORE) {
        s = ckpt_restore(dev);
        value = (uint32_t)dev->ckpt_found;
    } else {
        s = tl_ckpt_erase(dev->cfg.flash, dev->ckpt_slots);
    }
    if (s != TL_OK)
        return nak(r, s, 0);
    r_u32(r, TL_OK);
    r_u32(r, value);
    return TL_OK;
}

static TL_NOINLINE tl_status cmd_ckpt_config(tl_proto_dev *dev, const uint8_t *pl, uint32_t len, resp_buf *r)
{
    if (len != 12 + 4 * TL_CKPT_TAG_WORDS)
        return nak(r, TL_PROTO_ERR_PAYLOAD, 12 + 4 * TL_CKPT_TAG_WORDS);
    dev->ckpt.every = tl_get_u32(pl);
    dev->ckpt.epoch = tl_get_u32(pl + 4);
    dev->ckpt.index = tl_get_u32(pl + 8);
    for (int32_t i = 0; i < TL_CKPT_TAG_WORDS; i++)
        dev->ckpt.tag[i] = tl_get_u32(pl + 12 + 4 * i);
    r_u32(r, TL_OK);
    return TL_OK;
}

/* Sends the answer kept in dev->resp (again, for a repeated command): its bytes, for READ_WEIGHTS
 * the window of the weight stream read from the model (no command can have changed it since),
 * then the CRC32 of all of it. */
static TL_NOINLINE void send_response(tl_proto_dev *dev)
{
    tx_frame t;
    tx_begin(&t, dev);
    tx_put(&t, dev->resp, dev->resp_n, 1);
    if (dev->resp_weights_n > 0) {
        const tl_model v = stream_view(dev);
        uint8_t buf[64];
        for (int32_t i = 0; i < dev->resp_weights_n; i += (int32_t)sizeof(buf)) {
            int32_t k = dev->resp_weights_n - i;
            if (k > (int32_t)sizeof(buf))
                k = (int32_t)sizeof(buf);
            tl_proto_weights_read(&v, dev->resp_weights_off + i, buf, k);   /* range checked by the command */
            tx_put(&t, buf, k, 1);
        }
    }
    tx_end(&t);
}

static int32_t is_slow(uint8_t op)
{
    return op == TL_PROTO_OP_TRAIN || op == TL_PROTO_OP_EVAL || op == TL_PROTO_OP_EVAL_EXIT
           || op == TL_PROTO_OP_LOAD_END || op == TL_PROTO_OP_INFO || op == TL_PROTO_OP_CHECKPOINT
           || op == TL_PROTO_OP_ADAPT || op == TL_PROTO_OP_ADAPT_FEED;
}

tl_status tl_proto_dev_handle(tl_proto_dev *dev, const uint8_t *frame, int32_t n)
{
    if (!dev || !frame || n < 0)
        return TL_ERR_ARG;
    tl_proto_hdr h;
    tl_status s = tl_proto_check(frame, n, &h);
    if (s != TL_OK) {
        if (s == TL_PROTO_ERR_CRC)
            dev->stats.frames_crc++;
        else if (s == TL_PROTO_ERR_OVERSIZE)
            dev->stats.frames_oversize++;
        else
            dev->stats.frames_malformed++;
        dev->stats.naks++;
        /* op and seq as received (unverified): the host only acts on a NAK that echoes the seq
         * it is waiting for, so a corrupted seq costs a timeout, never a wrong action. */
        send_small(dev, n >= 1 ? frame[0] : 0, TL_PROTO_F_RESP | TL_PROTO_F_NAK,
                   n >= 4 ? (uint16_t)(frame[2] | (frame[3] << 8)) : 0xFFFFu, s, 0, 1);
        return TL_OK;
    }
    if (h.flags & TL_PROTO_F_RESP)
        return TL_OK;           /* a response echoed back to us (loopback wiring): ignore */
    dev->stats.frames_ok++;
    if (dev->have_last && h.seq == dev->last_seq && h.crc == dev->last_crc) {
        dev->stats.duplicates++;
        send_response(dev);
        return TL_OK;
    }
    if (is_slow(h.op))
        send_small(dev, h.op, TL_PROTO_F_RESP | TL_PROTO_F_BUSY, h.seq, TL_OK, 0, 0);

    const uint8_t *pl = frame + TL_PROTO_HDR_BYTES;
    resp_buf r;
    r.p = dev->resp + TL_PROTO_HDR_BYTES;
    r.n = 0;
    r.cap = (int32_t)sizeof(dev->resp) - TL_PROTO_HDR_BYTES;
    r.overflow = 0;
    dev->have_last = 0;             /* the cache is rewritten from here */
    dev->resp_weights_n = 0;
    switch (h.op) {
    case TL_PROTO_OP_INFO: s = cmd_info(dev, h.len, &r); break;
    case TL_PROTO_OP_LOAD_BEGIN: s = cmd_load_begin(dev, pl, h.len, &r); break;
    case TL_PROTO_OP_LOAD_DATA: s = cmd_load_data(dev, pl, h.len, &r); break;
    case TL_PROTO_OP_LOAD_END: s = cmd_load_end(dev, h.len, &r); break;
    case TL_PROTO_OP_INPUT: s = cmd_input(dev, pl, h.len, &r); break;
    case TL_PROTO_OP_TRAIN: s = cmd_train(dev, pl, h.len, &r); break;
    case TL_PROTO_OP_EVAL: s = cmd_eval(dev, pl, h.len, &r); break;
    case TL_PROTO_OP_STATS: s = cmd_stats(dev, h.len, &r); break;
    case TL_PROTO_OP_READ_WEIGHTS: s = cmd_read_weights(dev, pl, h.len, &r); break;
    case TL_PROTO_OP_RESET: s = cmd_reset(dev, h.len, &r); break;
    case TL_PROTO_OP_SET_CONFIG: s = cmd_set_config(dev, pl, h.len, &r); break;
    case TL_PROTO_OP_SET_LR: s = cmd_set_lr(dev, pl, h.len, &r); break;
    case TL_PROTO_OP_CHECKPOINT: s = cmd_checkpoint(dev, pl, h.len, &r); break;
    case TL_PROTO_OP_CKPT_CONFIG: s = cmd_ckpt_config(dev, pl, h.len, &r); break;
    case TL_PROTO_OP_ADAPT: s = cmd_adapt(dev, pl, h.len, &r); break;
    case TL_PROTO_OP_ADAPT_FEED: s = cmd_adapt_feed(dev, pl, h.len, &r); break;
    case TL_PROTO_OP_EVAL_EXIT: s = cmd_eval_exit(dev, pl, h.len, &r); break;
    default:
        dev->stats.unknown_ops++;
        s = nak(&r, TL_PROTO_ERR_UNKNOWN_OP, h.op);
        break;
    }
    if (r.overflow) {               /* cannot happen with TL_PROTO_MAX_RESP: a guard, not a path */
        dev->resp_weights_n = 0;
        s = nak(&r, TL_PROTO_ERR_BUF, r.cap);
    }
    if (s != TL_OK)
        dev->stats.naks++;
    /* the payload is in place at resp + 8; the header goes in front, the CRC is added on sending */
    uint8_t *f = dev->resp;
    f[0] = h.op;
    f[1] = (uint8_t)(TL_PROTO_F_RESP | (s != TL_OK ? TL_PROTO_F_NAK : 0));
    f[2] = (uint8_t)h.seq;
    f[3] = (uint8_t)(h.seq >> 8);
    tl_put_u32(f + 4, (uint32_t)(r.n + dev->resp_weights_n));
    dev->resp_n = TL_PROTO_HDR_BYTES + r.n;
    dev->have_last = 1;
    dev->last_seq = h.seq;
    dev->last_crc = h.crc;
    send_response(dev);
    return TL_OK;
}

tl_status tl_proto_dev_rx(tl_proto_dev *dev, const uint8_t *data, int32_t n)
{
    if (!dev || (!data && n > 0) || n < 0)
        return TL_ERR_ARG;
    while (n > 0) {
        int32_t used = 0, ev = TL_PROTO_EV_NONE;
        tl_proto_dec_feed(&dev->dec, data, n, &used, &ev);
        dev->stats.bytes_rx += (uint32_t)used;
        data += used;
        n -= used;
        if (ev == TL_PROTO_EV_FRAME) {
            tl_proto_dev_handle(dev, dev->dec.buf, dev->dec.n);
        } else if (ev == TL_PROTO_EV_ERROR) {
            const tl_proto_dec *d = &dev->dec;
            if (d->err == TL_PROTO_ERR_OVERSIZE)
                dev->stats.frames_oversize++;
            else
                dev->stats.frames_malformed++;
            dev->stats.naks++;
            send_small(dev, d->err_hdr_n >= 1 ? d->err_hdr[0] : 0, TL_PROTO_F_RESP | TL_PROTO_F_NAK,
                       d->err_hdr_n >= 4 ? (uint16_t)(d->err_hdr[2] | (d->err_hdr[3] << 8)) : 0xFFFFu,
                       d->err, 0, 1);
        }
    }
    return TL_OK;
}
