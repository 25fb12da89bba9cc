/* libFuzzer target: the host side's frame decoder (tl_proto_dec_feed + tl_proto_check, what
 * host/protocol.py's Decoder and check() call) on arbitrary device output.
 * Input: byte 0 gives the chunk size the bytes are fed in (1..256: serial reads arrive in
 * pieces), the rest is the byte stream.
 * Checked: the decoder never holds more than its buffer, and every frame that passes the check
 * re-encodes (tl_proto_encode) to wire bytes that decode to the very same frame. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tinylls.h"
#include "tl_proto_api.h"

static tl_proto_dec dec, again;
static uint8_t wire[TL_PROTO_MAX_WIRE];

static void round_trip(const uint8_t *frame, int32_t n)
{
    tl_proto_hdr h;
    if (tl_proto_check(frame, n, &h) != TL_OK)
        return;
    if (h.len > TL_PROTO_MAX_PAYLOAD || (int32_t)h.len + TL_PROTO_HDR_BYTES + TL_PROTO_CRC_BYTES != n)
        abort();
    int32_t wn = 0;
    if (tl_proto_encode(h.op, h.flags, h.seq, frame + TL_PROTO_HDR_BYTES, (int32_t)h.len, wire,
                        (int32_t)sizeof(wire), &wn) != TL_OK)
        abort();
    tl_proto_dec_init(&again);
    int32_t used = 0, ev = 0, pos = 0, seen = 0;
    while (pos < wn) {
        tl_proto_dec_feed(&again, wire + pos, wn - pos, &used, &ev);
        pos += used;
        if (ev == TL_PROTO_EV_ERROR)
            abort();
        if (ev == TL_PROTO_EV_FRAME && again.n > 0) {
            if (again.n != n || memcmp(again.buf, frame, (size_t)n) != 0)
                abort();
            seen++;
        }
    }
    if (seen != 1)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int32_t chunk = (int32_t)data[0] + 1;
    const uint8_t *p = data + 1;
    int32_t left = (int32_t)(size - 1 < (1u << 20) ? size - 1 : (1u << 20));
    tl_proto_dec_init(&dec);
    while (left > 0) {
        int32_t k = left < chunk ? left : chunk;
        /* exact-size copy of this read: ASan sees a decoder reading past what arrived */
        uint8_t *piece = malloc((size_t)k);
        memcpy(piece, p, (size_t)k);
        int32_t at = 0;
        while (at < k) {
            int32_t used = 0, ev = 0;
            tl_proto_dec_feed(&dec, piece + at, k - at, &used, &ev);
            if (used < 0 || used > k - at || (used == 0 && ev == TL_PROTO_EV_NONE))
                abort();              /* no progress: the host's read loop would spin */
            at += used;
            if (dec.n < 0 || dec.n > (int32_t)sizeof(dec.buf))
                abort();
            if (ev == TL_PROTO_EV_FRAME)
                round_trip(dec.buf, dec.n);
            else if (ev == TL_PROTO_EV_ERROR)
                (void)tl_proto_strerror(dec.err);
        }
        free(piece);
        p += k;
        left -= k;
    }
    return 0;
}
