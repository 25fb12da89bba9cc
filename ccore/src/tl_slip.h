/* SLIP escaping, the one implementation (tl_proto.c) behind the codec's encoders and the
 * dispatcher's streamed answers (tl_proto_dev.c). Internal header. */
#ifndef TL_SLIP_H
#define TL_SLIP_H

#include <stdint.h>

/* Escapes in[0, n) into out (cap bytes) in order, END and ESC as two bytes each, and stops at
 * the first byte that no longer fits: *used gets the input bytes consumed, the return value the
 * bytes written. The frame delimiters (END) are the caller's. out may lie below in within the same
 * buffer (in-place expansion) as long as writing never overtakes reading. */
int32_t tl_slip_escape(const uint8_t *in, int32_t n, uint8_t *out, int32_t cap, int32_t *used);

#endif /* TL_SLIP_H */
