/* tinylls firmware application: serial bytes -> protocol dispatcher -> C core.
 *
 * Board-independent. Every buffer is static and sized at build time (the Makefile / platformio.ini
 * pass the sizes, e.g. ARENA_BYTES from the host's arena planner `tl_model_arena_bytes`):
 *   TL_FW_BLOB_BYTES   model file buffer (trained in place: weights live here)
 *   TL_FW_ARENA_BYTES  scratch arena for inference and training
 *   TL_FW_INPUT_BYTES  staged input tensor (96 x 96 x 3 = 27648 for VWW)
 * A board port (firmware/boards/<board>/) calls tinylls_app_main() after its own startup.
 */
#include "board.h"
#include "tinylls.h"
#include "tl_proto_api.h"

#ifndef TL_FW_BLOB_BYTES
#define TL_FW_BLOB_BYTES (1024 * 1024)
#endif
#ifndef TL_FW_ARENA_BYTES
#define TL_FW_ARENA_BYTES (256 * 1024)
#endif
#ifndef TL_FW_INPUT_BYTES
#define TL_FW_INPUT_BYTES (96 * 96 * 3)
#endif

/* uint64_t storage keeps both 8-byte aligned: tl_modelfile_load needs 4, the arena 8. */
static uint64_t g_blob[(TL_FW_BLOB_BYTES + 7) / 8];
static uint64_t g_arena[(TL_FW_ARENA_BYTES + 7) / 8];
static int8_t g_input[TL_FW_INPUT_BYTES];
static tl_layer g_layers[TL_MAX_LAYERS];
static tl_proto_dev g_dev;

static void link_write(void *user, const uint8_t *data, int32_t n)
{
    (void)user;
    board_uart_write(data, n);
}

static uint32_t link_counter(void *user)
{
    (void)user;
    return board_counter();
}

int tinylls_app_main(void)
{
    tl_proto_dev_cfg cfg;
    uint8_t rx[256];

    board_init();
    cfg.blob = (uint8_t *)g_blob;
    cfg.blob_cap = (int32_t)sizeof(g_blob);
    cfg.layers = g_layers;
    cfg.max_layers = TL_MAX_LAYERS;
    cfg.arena = g_arena;
    cfg.arena_cap = (int32_t)sizeof(g_arena);
    cfg.input = g_input;
    cfg.input_cap = (int32_t)sizeof(g_input);
    cfg.write = link_write;
    cfg.counter = link_counter;
    cfg.user = 0;
    cfg.counter_kind = board_counter_kind();
    cfg.free_ram = board_free_ram();
    cfg.board = board_name();
    if (tl_proto_dev_init(&g_dev, &cfg) != TL_OK)
        return 1;
    for (;;) {
        int32_t n = board_uart_read(rx, (int32_t)sizeof(rx));
        if (n > 0)
            tl_proto_dev_rx(&g_dev, rx, n);
        else
            board_idle();
    }
}
