/*
 * A thin C layer over Xen's own shared-ring macros (<xen/io/ring.h>), so the
 * differential test (tests/ring_diff.rs) can drive the reference
 * implementation and compare it with xenpal_hal::ring.
 *
 * Two ring types, with different slot sizes:
 *   kind 0 ("a"): 24-byte requests, 16-byte responses -> 24-byte slots;
 *   kind 1 ("b"): 12-byte requests,  8-byte responses -> 12-byte slots.
 * Every function takes the kind first and dispatches.
 *
 * Only the ring.h macros touch the rings. What the macros leave to their
 * users, the shim does as Linux's drivers do: flow control (stage only if
 * not RING_FULL, answer only taken requests) and a read barrier between
 * seeing a producer index and reading the slots it covers.
 */

/* The barriers below are the xen_*mb() of interface 0x00030208 and later. */
#define __XEN_INTERFACE_VERSION__ 0x00040e00

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ring.h expects the includer to define these. */
#define xen_mb()  __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define xen_rmb() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define xen_wmb() __atomic_thread_fence(__ATOMIC_RELEASE)

#include <xen/io/ring.h>

/* Must match ReqA/RspA/ReqB/RspB in tests/ring_diff.rs. */
struct a_req { uint64_t id; uint32_t data[4]; };
struct a_rsp { uint64_t id; int32_t status; uint32_t pad; };
struct b_req { uint32_t id; uint32_t x; uint32_t y; };
struct b_rsp { uint32_t id; int16_t status; uint16_t pad; };

DEFINE_RING_TYPES(a, struct a_req, struct a_rsp);
DEFINE_RING_TYPES(b, struct b_req, struct b_rsp);

_Static_assert(sizeof(struct a_req) == 24, "a_req");
_Static_assert(sizeof(struct a_rsp) == 16, "a_rsp");
_Static_assert(sizeof(union a_sring_entry) == 24, "a slot");
_Static_assert(sizeof(struct b_req) == 12, "b_req");
_Static_assert(sizeof(struct b_rsp) == 8, "b_rsp");
_Static_assert(sizeof(union b_sring_entry) == 12, "b slot");
_Static_assert(offsetof(struct a_sring, ring) == 64, "a header");
_Static_assert(offsetof(struct b_sring, ring) == 64, "b header");

#define SHIM(T)                                                               \
static size_t T##_slot_size(void)                                             \
{                                                                             \
    return sizeof(union T##_sring_entry);                                     \
}                                                                             \
                                                                              \
static unsigned int T##_ring_size(size_t bytes)                               \
{                                                                             \
    return __CONST_RING_SIZE(T, bytes);                                       \
}                                                                             \
                                                                              \
/* XEN_FRONT_RING_INIT if start is 0; else SHARED_RING_INIT, the shared    \
 * indices set as if the ring had been used up to start, FRONT_RING_ATTACH. */\
static void *T##_front_new(void *page, size_t bytes, RING_IDX start)         \
{                                                                             \
    struct T##_sring *s = page;                                               \
    struct T##_front_ring *r = malloc(sizeof(*r));                            \
    if (!r)                                                                   \
        abort();                                                              \
    if (start == 0) {                                                         \
        XEN_FRONT_RING_INIT(r, s, bytes);                                     \
    } else {                                                                  \
        SHARED_RING_INIT(s);                                                  \
        s->req_prod = s->rsp_prod = start;                                    \
        s->req_event = s->rsp_event = start + 1;                              \
        FRONT_RING_ATTACH(r, s, start, bytes);                                \
    }                                                                         \
    return r;                                                                 \
}                                                                             \
                                                                              \
static void *T##_back_new(void *page, size_t bytes, RING_IDX start)          \
{                                                                             \
    struct T##_back_ring *r = malloc(sizeof(*r));                             \
    if (!r)                                                                   \
        abort();                                                              \
    BACK_RING_ATTACH(r, (struct T##_sring *)page, start, bytes);              \
    return r;                                                                 \
}                                                                             \
                                                                              \
static int T##_front_state(void *ring, unsigned int out[5])                   \
{                                                                             \
    struct T##_front_ring *r = ring;                                          \
    out[0] = r->req_prod_pvt;                                                 \
    out[1] = r->rsp_cons;                                                     \
    out[2] = RING_FREE_REQUESTS(r);                                           \
    out[3] = RING_FULL(r);                                                    \
    out[4] = RING_HAS_UNCONSUMED_RESPONSES(r);                                \
    return 0;                                                                 \
}                                                                             \
                                                                              \
static int T##_back_state(void *ring, unsigned int out[5])                    \
{                                                                             \
    struct T##_back_ring *r = ring;                                           \
    out[0] = r->rsp_prod_pvt;                                                 \
    out[1] = r->req_cons;                                                     \
    out[2] = RING_SIZE(r);                                                    \
    out[3] = 0;                                                               \
    out[4] = RING_HAS_UNCONSUMED_REQUESTS(r);                                 \
    return 0;                                                                 \
}                                                                             \
                                                                              \
/* 1 if staged, 0 if the ring is full. */                                     \
static int T##_front_stage(void *ring, const void *req)                       \
{                                                                             \
    struct T##_front_ring *r = ring;                                          \
    if (RING_FULL(r))                                                         \
        return 0;                                                             \
    memcpy(RING_GET_REQUEST(r, r->req_prod_pvt), req, sizeof(struct T##_req));\
    r->req_prod_pvt++;                                                        \
    return 1;                                                                 \
}                                                                             \
                                                                              \
static int T##_front_push(void *ring)                                         \
{                                                                             \
    struct T##_front_ring *r = ring;                                          \
    int notify;                                                               \
    RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(r, notify);                           \
    return notify;                                                            \
}                                                                             \
                                                                              \
/* 1 and the response in *rsp, or 0 if none is published. */                 \
static int T##_front_take(void *ring, void *rsp)                              \
{                                                                             \
    struct T##_front_ring *r = ring;                                          \
    struct T##_rsp copy;                                                      \
    if (!RING_HAS_UNCONSUMED_RESPONSES(r))                                    \
        return 0;                                                             \
    xen_rmb(); /* the slot after the index that covers it */                  \
    RING_COPY_RESPONSE(r, r->rsp_cons, &copy);                                \
    memcpy(rsp, &copy, sizeof(copy));                                         \
    r->rsp_cons++;                                                            \
    return 1;                                                                 \
}                                                                             \
                                                                              \
static int T##_front_final_check(void *ring)                                  \
{                                                                             \
    struct T##_front_ring *r = ring;                                          \
    int work;                                                                 \
    RING_FINAL_CHECK_FOR_RESPONSES(r, work);                                  \
    return work != 0;                                                         \
}                                                                             \
                                                                              \
/* 1 and the request in *req, or 0 if none (or no room to answer it). */     \
static int T##_back_take(void *ring, void *req)                               \
{                                                                             \
    struct T##_back_ring *r = ring;                                           \
    struct T##_req copy;                                                      \
    if (!RING_HAS_UNCONSUMED_REQUESTS(r))                                     \
        return 0;                                                             \
    xen_rmb();                                                                \
    RING_COPY_REQUEST(r, r->req_cons, &copy);                                 \
    memcpy(req, &copy, sizeof(copy));                                         \
    r->req_cons++;                                                            \
    return 1;                                                                 \
}                                                                             \
                                                                              \
/* 1 if staged, 0 if every taken request is already answered. */             \
static int T##_back_stage(void *ring, const void *rsp)                        \
{                                                                             \
    struct T##_back_ring *r = ring;                                           \
    if (r->req_cons == r->rsp_prod_pvt)                                       \
        return 0;                                                             \
    memcpy(RING_GET_RESPONSE(r, r->rsp_prod_pvt), rsp, sizeof(struct T##_rsp));\
    r->rsp_prod_pvt++;                                                        \
    return 1;                                                                 \
}                                                                             \
                                                                              \
static int T##_back_push(void *ring)                                          \
{                                                                             \
    struct T##_back_ring *r = ring;                                           \
    int notify;                                                               \
    RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(r, notify);                          \
    return notify;                                                            \
}                                                                             \
                                                                              \
static int T##_back_final_check(void *ring)                                   \
{                                                                             \
    struct T##_back_ring *r = ring;                                           \
    int work;                                                                 \
    RING_FINAL_CHECK_FOR_REQUESTS(r, work);                                   \
    return work != 0;                                                         \
}

SHIM(a)
SHIM(b)

/* Exported: shim_NAME(kind, ...) calls a_NAME or b_NAME. */
#define DISPATCH(ret, name, params, args)                                     \
ret shim_##name params;                                                       \
ret shim_##name params                                                        \
{                                                                             \
    switch (kind) {                                                           \
    case 0: return a_##name args;                                             \
    case 1: return b_##name args;                                             \
    default: abort();                                                         \
    }                                                                         \
}

DISPATCH(size_t, slot_size, (int kind), ())
DISPATCH(unsigned int, ring_size, (int kind, size_t bytes), (bytes))
DISPATCH(void *, front_new, (int kind, void *page, size_t bytes, RING_IDX start),
         (page, bytes, start))
DISPATCH(void *, back_new, (int kind, void *page, size_t bytes, RING_IDX start),
         (page, bytes, start))
DISPATCH(int, front_state, (int kind, void *ring, unsigned int out[5]), (ring, out))
DISPATCH(int, back_state, (int kind, void *ring, unsigned int out[5]), (ring, out))
DISPATCH(int, front_stage, (int kind, void *ring, const void *req), (ring, req))
DISPATCH(int, front_push, (int kind, void *ring), (ring))
DISPATCH(int, front_take, (int kind, void *ring, void *rsp), (ring, rsp))
DISPATCH(int, front_final_check, (int kind, void *ring), (ring))
DISPATCH(int, back_take, (int kind, void *ring, void *req), (ring, req))
DISPATCH(int, back_stage, (int kind, void *ring, const void *rsp), (ring, rsp))
DISPATCH(int, back_push, (int kind, void *ring), (ring))
DISPATCH(int, back_final_check, (int kind, void *ring), (ring))

void shim_ring_free(void *ring);
void shim_ring_free(void *ring)
{
    free(ring);
}
