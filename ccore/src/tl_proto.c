/* tinylls serial protocol codec: SLIP framing, 8-byte header, CRC32 (see tl_proto_api.h).
 * No allocation, no stdio: the decoder's buffer lives in the caller's tl_proto_dec. */
#include "tinylls.h"
#include "tl_proto_api.h"
#include "tl_bytes.h"
#include "tl_slip.h"

/* ---------------------------------------------------------------- decoder */
tl_status tl_proto_dec_init(tl_proto_dec *d)
{
    if (!d)
        return TL_ERR_ARG;
    d->n = 0;
    d->esc = 0;
    d->dropping = 0;
    d->ready = 0;
    d->err = TL_OK;
    d->err_hdr_n = 0;
    return TL_OK;
}

/* Remembers why the frame in progress is dropped and the header bytes seen so far, so the
 * dispatcher can NAK with the (unverified) sequence number. */
static void dec_fail(tl_proto_dec *d, tl_status why)
{
    int32_t k = d->n < 8 ? d->n : 8;
    for (int32_t i = 0; i < k; i++)
        d->err_hdr[i] = d->buf[i];
    d->err_hdr_n = k;
    d->err = why;
    d->n = 0;
    d->esc = 0;
}

tl_status tl_proto_dec_feed(tl_proto_dec *d, const uint8_t *data, int32_t n, int32_t *consumed,
                            int32_t *event)
{
    if (!d || (!data && n > 0) || n < 0 || !consumed || !event)
        return TL_ERR_ARG;
    *event = TL_PROTO_EV_NONE;
    if (d->ready) {                     /* release the frame handed out by the previous call */
        d->ready = 0;
        d->n = 0;
    }
    int32_t i = 0;
    while (i < n) {
        uint8_t b = data[i++];
        if (b == TL_SLIP_END) {
            if (d->dropping) {          /* end of a frame already reported as an error */
                d->dropping = 0;
                d->n = 0;
                d->esc = 0;
                continue;
            }
            if (d->esc) {               /* ESC END: a broken escape at the frame's end */
                dec_fail(d, TL_PROTO_ERR_MALFORMED);
                *event = TL_PROTO_EV_ERROR;
                break;
            }
            if (d->n == 0)              /* the leading END of a frame, or line noise */
                continue;
            d->ready = 1;
            *event = TL_PROTO_EV_FRAME;
            break;
        }
        if (d->dropping)
            continue;
        if (d->esc) {
            d->esc = 0;
            if (b == TL_SLIP_ESC_END) {
                b = TL_SLIP_END;
            } else if (b == TL_SLIP_ESC_ESC) {
                b = TL_SLIP_ESC;
            } else {
                dec_fail(d, TL_PROTO_ERR_MALFORMED);
                d->dropping = 1;
                *event = TL_PROTO_EV_ERROR;
                break;
            }
        } else if (b == TL_SLIP_ESC) {
            d->esc = 1;
            continue;
        }
        if (d->n >= TL_PROTO_MAX_FRAME) {
            dec_fail(d, TL_PROTO_ERR_OVERSIZE);
            d->dropping = 1;
            *event = TL_PROTO_EV_ERROR;
            break;
        }
        d->buf[d->n++] = b;
    }
    *consumed = i;
    return TL_OK;
}

/* ---------------------------------------------------------------- frames */
tl_status tl_proto_check(const uint8_t *frame, int32_t n, tl_proto_hdr *hdr)
{
    if (!frame || !hdr || n < 0)
        return TL_ERR_ARG;
    if (n < TL_PROTO_HDR_BYTES + TL_PROTO_CRC_BYTES)
        return TL_PROTO_ERR_MALFORMED;
    if (n > TL_PROTO_MAX_FRAME)
        return TL_PROTO_ERR_OVERSIZE;
    uint32_t len = tl_get_u32(frame + 4);
    uint32_t crc = tl_get_u32(frame + n - 4);
    /* The CRC is checked first: a flipped length byte is a transmission error, not a bad command. */
    if (tl_crc32(0, frame, n - 4) != crc)
        return TL_PROTO_ERR_CRC;
    if (len != (uint32_t)(n - TL_PROTO_HDR_BYTES - TL_PROTO_CRC_BYTES))
        return TL_PROTO_ERR_MALFORMED;
    hdr->op = frame[0];
    hdr->flags = frame[1];
    hdr->seq = (uint16_t)(frame[2] | (frame[3] << 8));
    hdr->len = len;
    hdr->crc = crc;
    return TL_OK;
}

tl_status tl_proto_build(uint8_t op, uint8_t flags, uint16_t seq, const uint8_t *payload, int32_t len,
                         uint8_t *out, int32_t cap, int32_t *out_len)
{
    if (!out || !out_len || len < 0 || (len > 0 && !payload))
        return TL_ERR_ARG;
    if (len > TL_PROTO_MAX_PAYLOAD)
        return TL_PROTO_ERR_OVERSIZE;
    int32_t total = TL_PROTO_HDR_BYTES + len + TL_PROTO_CRC_BYTES;
    if (cap < total)
        return TL_PROTO_ERR_BUF;
    out[0] = op;
    out[1] = flags;
    out[2] = (uint8_t)seq;
    out[3] = (uint8_t)(seq >> 8);
    tl_put_u32(out + 4, (uint32_t)len);
    /* payload may alias out + 8 (the dispatcher builds responses in place) */
    if (payload != out + TL_PROTO_HDR_BYTES)
        for (int32_t i = 0; i < len; i++)
            out[TL_PROTO_HDR_BYTES + i] = payload[i];
    tl_put_u32(out + TL_PROTO_HDR_BYTES + len, tl_crc32(0, out, TL_PROTO_HDR_BYTES + len));
    *out_len = total;
    return TL_OK;
}

int32_t tl_slip_escape(const uint8_t *in, int32_t n, uint8_t *out, int32_t cap, int32_t *used)
{
    int32_t i = 0, k = 0;
    for (; i < n; i++) {
        const uint8_t b = in[i];
        if (b == TL_SLIP_END || b == TL_SLIP_ESC) {
            if (k + 2 > cap)
                break;
            out[k++] = TL_SLIP_ESC;
            out[k++] = b == TL_SLIP_END ? TL_SLIP_ESC_END : TL_SLIP_ESC_ESC;
        } else {
            if (k + 1 > cap)
                break;
            out[k++] = b;
        }
    }
    *used = i;
    return k;
}

/* END, the escaped frame, END into out[0, cap): the frame may lie at the end of out itself (see
 * tl_proto_encode). */
static tl_status slip_frame(const uint8_t *frame, int32_t n, uint8_t *out, int32_t cap, int32_t *out_len)
{
    if (cap < 2)
        return TL_PROTO_ERR_BUF;
    int32_t used;
    const int32_t k = 1 + tl_slip_escape(frame, n, out + 1, cap - 2, &used);
    if (used < n)
        return TL_PROTO_ERR_BUF;
    out[0] = TL_SLIP_END;
    out[k] = TL_SLIP_END;
    *out_len = k + 1;
    return TL_OK;
}

tl_status tl_proto_slip_encode(const uint8_t *frame, int32_t n, uint8_t *out, int32_t cap,
                               int32_t *out_len)
{
    if (!frame || !out || !out_len || n < 0)
        return TL_ERR_ARG;
    return slip_frame(frame, n, out, cap, out_len);
}

tl_status tl_proto_encode(uint8_t op, uint8_t flags, uint16_t seq, const uint8_t *payload, int32_t len,
                          uint8_t *out, int32_t cap, int32_t *out_len)
{
    if (!out || !out_len || len < 0)
        return TL_ERR_ARG;
    if (len > TL_PROTO_MAX_PAYLOAD)
        return TL_PROTO_ERR_OVERSIZE;
    /* Build the plain frame at the end of out, then escape it forward into the front: the write
     * position never overtakes the read position because the frame starts at cap - n >= 2n + 2 - n. */
    int32_t n = TL_PROTO_HDR_BYTES + len + TL_PROTO_CRC_BYTES;
    if (cap < 2 * n + 2)
        return TL_PROTO_ERR_BUF;
    uint8_t *frame = out + cap - n;
    int32_t got = 0;
    tl_status s = tl_proto_build(op, flags, seq, payload, len, frame, n, &got);
    if (s != TL_OK)
        return s;
    return slip_frame(frame, n, out, cap, out_len);
}

/* ---------------------------------------------------------------- names */
const char *tl_proto_strerror(tl_status s)
{
    switch (s) {
    case TL_OK: return "TL_OK: success";
    case TL_PROTO_ERR_CRC: return "TL_PROTO_ERR_CRC: frame CRC32 mismatch";
    case TL_PROTO_ERR_OVERSIZE: return "TL_PROTO_ERR_OVERSIZE: frame longer than TL_PROTO_MAX_FRAME";
    case TL_PROTO_ERR_MALFORMED: return "TL_PROTO_ERR_MALFORMED: bad SLIP escape, short frame or wrong length field";
    case TL_PROTO_ERR_UNKNOWN_OP: return "TL_PROTO_ERR_UNKNOWN_OP: unknown command";
    case TL_PROTO_ERR_PAYLOAD: return "TL_PROTO_ERR_PAYLOAD: wrong payload length for this command";
    case TL_PROTO_ERR_SIZE: return "TL_PROTO_ERR_SIZE: input size differs from the model's input tensor";
    case TL_PROTO_ERR_RANGE: return "TL_PROTO_ERR_RANGE: offset/length outside the buffer";
    case TL_PROTO_ERR_NO_MODEL: return "TL_PROTO_ERR_NO_MODEL: no model loaded";
    case TL_PROTO_ERR_NO_LOAD: return "TL_PROTO_ERR_NO_LOAD: LOAD_DATA/LOAD_END without LOAD_BEGIN";
    case TL_PROTO_ERR_TOO_BIG: return "TL_PROTO_ERR_TOO_BIG: model file larger than the firmware's model buffer";
    case TL_PROTO_ERR_MODEL_CRC: return "TL_PROTO_ERR_MODEL_CRC: received model file does not match its CRC32";
    case TL_PROTO_ERR_INPUT_CRC: return "TL_PROTO_ERR_INPUT_CRC: staged input does not match its CRC32";
    case TL_PROTO_ERR_ARENA: return "TL_PROTO_ERR_ARENA: model needs a larger arena than the firmware has";
    case TL_PROTO_ERR_INPUT_CAP: return "TL_PROTO_ERR_INPUT_CAP: model input larger than the firmware's input buffer";
    case TL_PROTO_ERR_LABEL: return "TL_PROTO_ERR_LABEL: label outside [0, classes)";
    case TL_PROTO_ERR_BUF: return "TL_PROTO_ERR_BUF: output buffer too small";
    case TL_PROTO_ERR_CONFIG: return "TL_PROTO_ERR_CONFIG: training configuration out of range or not possible with this model";
    case TL_PROTO_ERR_IN_FLASH: return "TL_PROTO_ERR_IN_FLASH: the firmware holds this model in flash: no LOAD_DATA, send LOAD_END";
    case TL_PROTO_ERR_NO_FLASH: return "TL_PROTO_ERR_NO_FLASH: this board has no checkpoint flash";
    default: return tl_strerror(s);     /* core codes: one table, in the core */
    }
}

const char *tl_proto_op_name(int32_t op)
{
    switch (op) {
    case TL_PROTO_OP_INFO: return "INFO";
    case TL_PROTO_OP_LOAD_BEGIN: return "LOAD_BEGIN";
    case TL_PROTO_OP_LOAD_DATA: return "LOAD_DATA";
    case TL_PROTO_OP_LOAD_END: return "LOAD_END";
    case TL_PROTO_OP_INPUT: return "INPUT";
    case TL_PROTO_OP_TRAIN: return "TRAIN";
    case TL_PROTO_OP_EVAL: return "EVAL";
    case TL_PROTO_OP_STATS: return "STATS";
    case TL_PROTO_OP_READ_WEIGHTS: return "READ_WEIGHTS";
    case TL_PROTO_OP_RESET: return "RESET";
    case TL_PROTO_OP_SET_CONFIG: return "SET_CONFIG";
    case TL_PROTO_OP_SET_LR: return "SET_LR";
    case TL_PROTO_OP_CHECKPOINT: return "CHECKPOINT";
    case TL_PROTO_OP_CKPT_CONFIG: return "CKPT_CONFIG";
    case TL_PROTO_OP_ADAPT: return "ADAPT";
    case TL_PROTO_OP_ADAPT_FEED: return "ADAPT_FEED";
    case TL_PROTO_OP_EVAL_EXIT: return "EVAL_EXIT";
    default: return "UNKNOWN";
    }
}
