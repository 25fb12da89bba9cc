/* tinylls serial protocol: the codec and the device-side command dispatcher (spec: docs/protocol.md).
 *
 * Plain C with no #include/#if and literal enum values (host/_build_ffi.py hands this text to
 * cffi's cdef), so the host (host/protocol.py) and the firmware run the same code. C users include
 * tinylls.h first, then this file.
 *
 * Wire format (esptool-like). Every packet is SLIP framed: END (0xC0) before and after, 0xC0 in the
 * body sent as ESC ESC_END (0xDB 0xDC), 0xDB as ESC ESC_ESC (0xDB 0xDD). The unescaped frame is
 *
 *   offset 0  uint8   op      command opcode (TL_PROTO_OP_*); a response echoes it
 *          1  uint8   flags   TL_PROTO_F_* (0 for a command)
 *          2  uint16  seq     command sequence number; a response echoes it
 *          4  uint32  len     payload bytes, <= TL_PROTO_MAX_PAYLOAD
 *          8  len bytes       payload (all integers little-endian)
 *      8+len  uint32  crc     tl_crc32 over bytes [0, 8+len)
 *
 * Every response payload starts with int32 status (0 = ACK; otherwise a NAK carrying a
 * TL_PROTO_ERR_* or core TL_ERR_* code, followed by int32 detail, e.g. the expected size).
 * A command whose (seq, crc) equals the previous command's is a retransmission: the device sends
 * the cached response again and executes nothing, so a TRAIN repeated after a lost ACK trains once.
 * Before a command that computes for long (TRAIN, EVAL, LOAD_END, INFO) the device sends a BUSY
 * frame (flags RESP|BUSY, same op and seq, empty payload) so the host can tell "lost" from "busy".
 */

/* ---------------------------------------------------------------- sizes */
enum {
    TL_PROTO_VERSION = 5,              /* 2: SET_CONFIG, SET_LR, training config in INFO;
                                          3: model in flash (LOAD_BEGIN answers resident), input
                                          staged in the arena, INFO ends with rom/stack words;
                                          4: checkpoints in flash (CHECKPOINT, CKPT_CONFIG, INFO
                                          ends with the checkpoint words);
                                          5: camera adaptation (ADAPT, ADAPT_FEED) and early
                                             exit from the LLS heads (EVAL_EXIT) */
    TL_PROTO_HDR_BYTES = 8,
    TL_PROTO_CRC_BYTES = 4,
    TL_PROTO_MAX_PAYLOAD = 1036,       /* largest payload either side accepts: what the largest
                                          frames need - LOAD_DATA / INPUT (u32 offset + 1024 bytes),
                                          SET_LR (4 + 16 x 64 layers = 1028), a READ_WEIGHTS answer
                                          (status, total, offset + 1024 bytes = 1036) */
    TL_PROTO_MAX_DATA = 1024,          /* data bytes of one LOAD_DATA / INPUT / READ_WEIGHTS frame */
    TL_PROTO_MAX_FRAME = 1048,         /* HDR + MAX_PAYLOAD + CRC, unescaped */
    TL_PROTO_MAX_WIRE = 2098,          /* 2 * MAX_FRAME + 2: worst-case SLIP-escaped frame */
    TL_PROTO_MAX_RESP = 244            /* HDR + the largest answer the device keeps for repeats
                                          (INFO: 236 bytes; TRAIN/EVAL <= 20 + 32 classes + 64
                                          layers, EVAL_EXIT 4 more); READ_WEIGHTS data is re-read,
                                          not kept */
};

enum {                                 /* SLIP bytes */
    TL_SLIP_END = 192,                 /* 0xC0 */
    TL_SLIP_ESC = 219,                 /* 0xDB */
    TL_SLIP_ESC_END = 220,             /* 0xDC */
    TL_SLIP_ESC_ESC = 221              /* 0xDD */
};

enum {                                 /* header flags */
    TL_PROTO_F_RESP = 1,               /* device -> host */
    TL_PROTO_F_NAK = 2,                /* response with status != 0 */
    TL_PROTO_F_BUSY = 4                /* command accepted, result follows later */
};

/* ---------------------------------------------------------------- commands
 * Payloads (host -> device) and response data after the int32 status (device -> host).     */
enum {
    TL_PROTO_OP_INFO = 1,        /* -> u16 proto, u16 n_layers, u32 flags (bit0 model loaded,
                                  *    bit1 input staged in the arena, bit2 the loaded model is
                                  *    the one in flash),
                                  *    u32 arena_needed, u32 arena_cap, u32 blob_cap, u32 input_cap,
                                  *    u32 free_ram, u32 model_size, u32 model_crc, u32 weights_bytes,
                                  *    u32 weights_crc, u32 steps, i32 classes, i32 in_h, i32 in_w,
                                  *    i32 in_c, u32 counter_kind, u32 max_payload,
                                  *    char board[16], char version[16],
                                  *    i32 basis, i32 variant, i32 rounding, u32 seed, u32 basis_seed,
                                  *    i32 inv_tau_q8 (the loaded model's training configuration),
                                  *    u32 rom_size, u32 rom_crc (model file in flash, 0 if none),
                                  *    u32 stack_used (stack high-water mark in bytes since boot,
                                  *    0 if the board does not measure it),
                                  *    (protocol 4) u32 ckpt_flags (bit0: the board has checkpoint
                                  *    flash), u32 ckpt_found (TL_CKPT_* of the last restore: at
                                  *    boot or by CHECKPOINT), i32 ckpt_status (status of the last
                                  *    save, 0 = ok), u32 ckpt_saves (since boot), u32 every,
                                  *    u32 epoch, u32 index (data cursor), u32 tag[8] (the run's
                                  *    tag: CKPT_CONFIG's, or the restored checkpoint's, or after a
                                  *    restore that found another model's checkpoint, its), then per
                                  *    slot A, B: u32 state (TL_CKPT_SLOT_*), u32 generation,
                                  *    u32 step, u32 payload_crc                                */
    TL_PROTO_OP_LOAD_BEGIN = 2,  /* u32 size, u32 crc32 of the model file -> u32 resident: 1 when
                                  * (size, crc) is the model file in flash: then send no
                                  * LOAD_DATA (NAK TL_PROTO_ERR_IN_FLASH), LOAD_END copies its
                                  * trainable tensors to RAM afresh; 0: send the file           */
    TL_PROTO_OP_LOAD_DATA = 3,   /* u32 offset, bytes -> nothing                               */
    TL_PROTO_OP_LOAD_END = 4,    /* (none) -> u32 arena_needed, u16 n_layers, u16 classes       */
    TL_PROTO_OP_INPUT = 5,       /* u32 offset, bytes: stage part of the input tensor -> nothing */
    TL_PROTO_OP_TRAIN = 6,       /* i32 label, u32 input_len, u32 input_crc -> result (below)   */
    TL_PROTO_OP_EVAL = 7,        /* u32 with_local, u32 input_len, u32 input_crc -> result      */
    TL_PROTO_OP_STATS = 8,       /* -> TL_PROTO_N_STATS x u32 (tl_proto_stats order)          */
    TL_PROTO_OP_READ_WEIGHTS = 9,/* u32 offset, u32 max_len -> u32 total, u32 offset, bytes     */
    TL_PROTO_OP_RESET = 10,      /* -> nothing: forgets model, staged input and statistics      */
    TL_PROTO_OP_SET_CONFIG = 11, /* i32 basis, i32 variant, i32 rounding, u32 seed, u32 basis_seed,
                                  * i32 inv_tau_q8 (tl_train_cfg) -> nothing. Replaces the loaded
                                  * model's training configuration (tl_modelfile_load's defaults:
                                  * square, variant of the file's lls_m, stochastic, seed 0, basis
                                  * seed 0, tau 0.5) and resets the step counter to 0. Checked first
                                  * (NAK TL_PROTO_ERR_CONFIG, detail = index of the bad field; or a
                                  * core code from tl_model_prepare), nothing changes on a NAK.
                                  * variant may be PLAIN or the one the file's lls_m arrays hold. */
    TL_PROTO_OP_SET_LR = 12,     /* u32 n_layers, then per layer i32 lr_mult, i32 lr_shift,
                                  * i32 lls_m_lr_mult, i32 lls_m_lr_shift -> nothing. Learning
                                  * rates of every layer as quantized multipliers (a schedule sends
                                  * one before each epoch). n_layers must be the model's
                                  * (TL_PROTO_ERR_PAYLOAD, detail: expected payload bytes); each pair
                                  * is checked as the model file loader checks it (NAK TL_ERR_QUANT,
                                  * detail = layer index); nothing changes on a NAK.           */
    TL_PROTO_OP_CHECKPOINT = 13, /* u32 action -> u32 value. Action TL_PROTO_CKPT_SAVE: writes a
                                  * checkpoint now (value: its generation); RESTORE: restores the
                                  * newest valid checkpoint of the loaded model (weights, biases,
                                  * lls_m, rates, training config, step, cursor, every, tag; value:
                                  * TL_CKPT_*, the model is untouched unless TL_CKPT_RESTORED);
                                  * ERASE: forgets both slots (value 0). NAK TL_PROTO_ERR_NO_FLASH
                                  * without checkpoint flash, TL_PROTO_ERR_NO_MODEL for SAVE or
                                  * RESTORE without a model, a core code (TL_ERR_FLASH...) when the
                                  * flash fails: the previous checkpoint is then still valid.  */
    TL_PROTO_OP_CKPT_CONFIG = 14,/* u32 every, u32 epoch, u32 index, u32 tag[8] -> nothing. every:
                                  * automatic checkpoint after each TRAIN that makes the step
                                  * counter a multiple of it (0 = off; saved before TRAIN answers,
                                  * its status in INFO ckpt_status, never a NAK of the TRAIN);
                                  * (epoch, index): the data cursor of the next TRAIN, which
                                  * advances index by one; tag: the host's description of the run,
                                  * stored in checkpoints. Needs no model or flash.             */
    TL_PROTO_OP_ADAPT = 15,      /* u32 action, u32 layer -> (BEGIN) nothing; (APPLY) u32 images,
                                  * u32 crc32 of the layer's bias, out_mult, out_shift after the
                                  * update (int32 LE). BEGIN: zero the statistics of `layer` (it
                                  * must carry them in the model file: tl_adapt_plan); APPLY (the
                                  * same layer, >= 1 image fed): tl_adapt_finish_apply. TRAIN,
                                  * EVAL, LOAD and RESET in between forget an adaptation begun.  */
    TL_PROTO_OP_ADAPT_FEED = 16, /* u32 input_len, u32 input_crc -> u32 insn, u32 images: the staged
                                  * input through the layers before the one begun, its statistics
                                  * added (tl_adapt_feed); images: fed since BEGIN. Labels: none. */
    TL_PROTO_OP_EVAL_EXIT = 17   /* (protocol 5) u32 first_layer, i32 threshold_q16, u32 input_len,
                                  * u32 input_crc -> result (below), then i32 exit_layer:
                                  * early-exit inference (tl_model_infer_exit) on the staged
                                  * input; exit_layer n_layers - 1 when the classifier answered;
                                  * logits are zeros when a head did;
                                  * local_pred holds the heads evaluated. first_layer / threshold
                                  * out of range: NAK TL_ERR_ARG. Counted as an EVAL in STATS
                                  * (last_infer_insn, min_infer_insn); insn = this inference's.  */
};
enum {                                 /* ADAPT actions */
    TL_PROTO_ADAPT_BEGIN = 0,
    TL_PROTO_ADAPT_APPLY = 1
};
enum {                                 /* CHECKPOINT actions */
    TL_PROTO_CKPT_SAVE = 0,
    TL_PROTO_CKPT_RESTORE = 1,
    TL_PROTO_CKPT_ERASE = 2
};
/* result of TRAIN / EVAL: u32 insn (counter units of this step), u32 steps, i32 pred,
 * u16 classes, u16 n_layers, i8 logits[classes], i8 local_pred[n_layers] (-1: no local head). */

enum {                                 /* INFO counter_kind */
    TL_PROTO_COUNTER_NONE = 0,
    TL_PROTO_COUNTER_INSN = 1,         /* retired instructions (QEMU -icount shift=0 + SysTick) */
    TL_PROTO_COUNTER_CYCLES = 2        /* CPU cycles (DWT->CYCCNT, Xtensa CCOUNT) */
};

/* ---------------------------------------------------------------- status codes
 * Protocol errors; core errors (TL_ERR_*, -1..-99) pass through NAKs unchanged. */
enum {
    TL_PROTO_ERR_CRC = -101,           /* frame CRC32 mismatch */
    TL_PROTO_ERR_OVERSIZE = -102,      /* frame longer than TL_PROTO_MAX_FRAME */
    TL_PROTO_ERR_MALFORMED = -103,     /* bad SLIP escape, short frame or len field != payload */
    TL_PROTO_ERR_UNKNOWN_OP = -104,    /* opcode this firmware does not know */
    TL_PROTO_ERR_PAYLOAD = -105,       /* payload length wrong for this command */
    TL_PROTO_ERR_SIZE = -106,          /* input/image size != what the model expects (detail) */
    TL_PROTO_ERR_RANGE = -107,         /* offset/length outside the buffer (detail: capacity) */
    TL_PROTO_ERR_NO_MODEL = -108,      /* command needs a loaded model */
    TL_PROTO_ERR_NO_LOAD = -109,       /* LOAD_DATA/LOAD_END without LOAD_BEGIN */
    TL_PROTO_ERR_TOO_BIG = -110,       /* model file larger than the blob buffer (detail: cap) */
    TL_PROTO_ERR_MODEL_CRC = -111,     /* received model file does not match LOAD_BEGIN's CRC */
    TL_PROTO_ERR_INPUT_CRC = -112,     /* staged input does not match the command's CRC */
    TL_PROTO_ERR_ARENA = -113,         /* model needs more arena than the firmware has (detail) */
    TL_PROTO_ERR_INPUT_CAP = -114,     /* model input larger than the input buffer (detail) */
    TL_PROTO_ERR_LABEL = -115,         /* label < 0 or >= classes (detail: classes) */
    TL_PROTO_ERR_BUF = -116,           /* output buffer too small (codec) */
    TL_PROTO_ERR_CONFIG = -117,        /* SET_CONFIG value out of range or not possible with the
                                          loaded model (detail: field index, 0 = basis .. 5 = inv_tau_q8) */
    TL_PROTO_ERR_IN_FLASH = -118,      /* LOAD_DATA after a LOAD_BEGIN of the model held in flash */
    TL_PROTO_ERR_NO_FLASH = -119       /* CHECKPOINT on a board without checkpoint flash */
};

enum {                                 /* INFO flags */
    TL_PROTO_INFO_LOADED = 1,
    TL_PROTO_INFO_INPUT_IN_ARENA = 2,
    TL_PROTO_INFO_MODEL_IN_FLASH = 4
};

enum {                                 /* tl_proto_dec_feed events */
    TL_PROTO_EV_NONE = 0,              /* byte consumed, no frame yet */
    TL_PROTO_EV_FRAME = 1,             /* a whole SLIP frame is in dec->buf[0..n) (not yet checked) */
    TL_PROTO_EV_ERROR = 2              /* a frame was dropped: dec->err says why */
};

enum { TL_PROTO_N_STATS = 16 };

/* ---------------------------------------------------------------- codec */
typedef struct {
    uint8_t op;
    uint8_t flags;
    uint16_t seq;
    uint32_t len;                      /* payload bytes */
    uint32_t crc;                      /* as received */
} tl_proto_hdr;

/* Incremental SLIP decoder with a bounded buffer (no allocation). */
typedef struct {
    uint8_t buf[1048];                 /* (TL_PROTO_MAX_FRAME) unescaped frame */
    int32_t n;                         /* bytes in buf */
    int32_t esc;                       /* previous byte was ESC */
    int32_t dropping;                  /* discarding until the next END (after an error) */
    int32_t ready;                     /* buf holds a frame handed out by the last call */
    tl_status err;                     /* reason of the last TL_PROTO_EV_ERROR */
    uint8_t err_hdr[8];                /* first header bytes of the dropped frame (best effort) */
    int32_t err_hdr_n;
} tl_proto_dec;

tl_status tl_proto_dec_init(tl_proto_dec *d);
/* Feeds bytes until one event (or all n consumed): *consumed bytes were used, *event is
 * TL_PROTO_EV_*. After EV_FRAME the frame stays in d->buf until the next call. */
tl_status tl_proto_dec_feed(tl_proto_dec *d, const uint8_t *data, int32_t n, int32_t *consumed,
                            int32_t *event);
/* Checks an unescaped frame (length field, CRC32) and fills *hdr; the payload is frame + 8. */
tl_status tl_proto_check(const uint8_t *frame, int32_t n, tl_proto_hdr *hdr);
/* Builds an unescaped frame: header, payload (may be NULL when len is 0), CRC.
 * out: at least 12 + len bytes; *out_len receives the frame length. */
tl_status tl_proto_build(uint8_t op, uint8_t flags, uint16_t seq, const uint8_t *payload, int32_t len,
                         uint8_t *out, int32_t cap, int32_t *out_len);
/* SLIP-escapes a frame with END before and after: out needs 2 * n + 2 bytes in the worst case. */
tl_status tl_proto_slip_encode(const uint8_t *frame, int32_t n, uint8_t *out, int32_t cap,
                               int32_t *out_len);
/* tl_proto_build + tl_proto_slip_encode in one call (wire bytes ready to send). */
tl_status tl_proto_encode(uint8_t op, uint8_t flags, uint16_t seq, const uint8_t *payload, int32_t len,
                          uint8_t *out, int32_t cap, int32_t *out_len);
/* Name of a protocol or core status code ("TL_PROTO_ERR_CRC: frame CRC32 mismatch"). */
const char *tl_proto_strerror(tl_status s);
const char *tl_proto_op_name(int32_t op);

/* ---------------------------------------------------------------- device dispatcher */
/* Everything the dispatcher uses is owned by the caller (static buffers on a board). */
typedef struct {
    uint8_t *blob;                     /* (blob_cap) 4-byte aligned RAM: a model file received by
                                          LOAD (trained in place), or the trainable tensors of the
                                          model in flash (rom) */
    int32_t blob_cap;
    tl_layer *layers;                  /* (max_layers) */
    int32_t max_layers;
    void *arena;                       /* (arena_cap) scratch for the core */
    int32_t arena_cap;
    int8_t *input;                     /* (input_cap) staged input tensor; NULL with input_cap 0:
                                          staged in the arena (tl_model_input_offset), no buffer */
    int32_t input_cap;
    /* writes wire bytes to the link (may be called several times per frame) */
    void (*write)(void *user, const uint8_t *data, int32_t n);
    /* free-running counter (instructions or cycles, see counter_kind); NULL reads 0 */
    uint32_t (*counter)(void *user);
    void *user;
    uint32_t counter_kind;             /* TL_PROTO_COUNTER_* */
    uint32_t free_ram;                 /* bytes of RAM left unused by this firmware */
    const char *board;                 /* board name for INFO, <= 15 chars shown */
    /* optional (zero: absent) */
    const uint8_t *rom;                /* model file in flash (4-byte aligned, rom_size bytes) or NULL:
                                          loaded by tl_proto_dev_init with tl_modelfile_load_rom (its
                                          trainable tensors copied to blob), and again by a LOAD of
                                          the same (size, CRC) without data */
    int32_t rom_size;
    uint32_t (*stack_used)(void *user);/* stack high-water mark in bytes (INFO), NULL: not measured */
    const tl_flash *flash;             /* checkpoint flash region or NULL: with a model in flash
                                          (rom), tl_proto_dev_init restores its newest checkpoint */
} tl_proto_dev_cfg;

typedef struct {
    uint32_t frames_ok;                /* well-formed commands received */
    uint32_t frames_crc;               /* dropped: CRC mismatch */
    uint32_t frames_oversize;          /* dropped: too long */
    uint32_t frames_malformed;         /* dropped: bad SLIP / short / bad len */
    uint32_t naks;                     /* NAK responses sent */
    uint32_t duplicates;               /* retransmitted commands answered from the cache */
    uint32_t unknown_ops;
    uint32_t train_steps;              /* TRAIN commands executed */
    uint32_t evals;                    /* EVAL commands executed */
    uint32_t last_train_insn;          /* counter units of the last train step */
    uint32_t last_infer_insn;          /* counter units of the last inference */
    uint32_t min_train_insn;
    uint32_t min_infer_insn;
    uint32_t loads;                    /* models loaded successfully */
    uint32_t bytes_rx;                 /* wire bytes received */
    uint32_t bytes_tx;                 /* wire bytes sent */
} tl_proto_stats;

typedef struct {
    tl_proto_dev_cfg cfg;
    tl_proto_dec dec;
    tl_proto_stats stats;
    tl_model model;
    int32_t loaded;                    /* model valid */
    uint32_t model_size, model_crc;    /* loaded model file */
    int32_t loading;                   /* LOAD_BEGIN seen */
    uint32_t load_size, load_crc;      /* expected by LOAD_BEGIN */
    int32_t input_bytes;               /* model input tensor bytes */
    int32_t file_variant;              /* TL_LLS_* of the loaded file's lls_m arrays (PLAIN: none);
                                          the READ_WEIGHTS stream counts lls_m with it */
    int8_t *input;                     /* where the loaded model's input is staged */
    int32_t model_in_rom;              /* the loaded model is cfg.rom */
    int32_t loading_rom;               /* LOAD_BEGIN named cfg.rom: no data expected */
    uint32_t rom_crc;                  /* crc32 of cfg.rom */
    int32_t have_last;                 /* cache valid */
    uint16_t last_seq;
    uint32_t last_crc;                 /* CRC of the last command frame */
    int32_t resp_n;                    /* bytes in resp */
    int32_t resp_weights_off;          /* a READ_WEIGHTS answer: its payload ends with */
    int32_t resp_weights_n;            /* resp_weights_n bytes of the weight stream from resp_weights_off,
                                          read from the model (which no command changed since)
                                          whenever the answer is sent; 0 for every other answer */
    tl_ckpt_state ckpt;                /* cursor, interval, tag and the last save/restore's words */
    tl_ckpt_slot ckpt_slots[2];        /* what the flash holds (scanned at init, kept up to date) */
    int32_t ckpt_found;                /* TL_CKPT_* of the last restore */
    int32_t ckpt_status;               /* status of the last save */
    uint32_t ckpt_saves;
    int32_t adapt_active;              /* an ADAPT BEGIN is in progress (for adapt_layer) */
    int32_t adapt_layer;
    uint32_t adapt_images;             /* ADAPT_FEEDs since that BEGIN */
    uint32_t last_adapt_insn;          /* counter units of the last ADAPT_FEED */
    uint8_t resp[244];                 /* (TL_PROTO_MAX_RESP) last response without its CRC (sent
                                          with it): header and payload, unescaped */
} tl_proto_dev;

/* Checks cfg and, with cfg->rom, loads the model in flash (its status on failure: TL_ERR_RAM when
 * blob_cap is smaller than its trainable tensors, TL_PROTO_ERR_ARENA when the arena is too small). */
tl_status tl_proto_dev_init(tl_proto_dev *dev, const tl_proto_dev_cfg *cfg);
/* Feeds received bytes; every complete command is executed and answered through cfg.write
 * before this returns. Never fails on bad input (that is answered with a NAK). */
tl_status tl_proto_dev_rx(tl_proto_dev *dev, const uint8_t *data, int32_t n);
/* Executes one checked command frame and answers it (used by tl_proto_dev_rx). */
tl_status tl_proto_dev_handle(tl_proto_dev *dev, const uint8_t *frame, int32_t n);
/* Bytes of the READ_WEIGHTS stream of the loaded model (weights int8, bias int32-LE, lls_m
 * int32-LE per layer) and its CRC32; the same bytes host.model.weights_sha256 hashes. */
tl_status tl_proto_weights_size(const tl_model *m, int32_t *size);
tl_status tl_proto_weights_read(const tl_model *m, int32_t offset, uint8_t *out, int32_t n);
tl_status tl_proto_weights_crc(const tl_model *m, uint32_t *crc);
