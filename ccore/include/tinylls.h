/* tinylls: integer-only MobileNetV1 int8 inference and LLS on-device training. */
#ifndef TINYLLS_H
#define TINYLLS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "tinylls_api.h"

#ifdef __cplusplus
}
#endif

#endif /* TINYLLS_H */
