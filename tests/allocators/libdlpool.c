/* A buffer pool in a shared library that its program loads only when
 * told to, with dlopen: the target of `observer attach --alloc
 * libdlpool.so:pool_get --release libdlpool.so:pool_put` placed before the
 * library is loaded. Buffers given back are kept for the next pool_get of
 * the same size class; the id of a buffer is its address. The library's
 * own code takes buffers too (session_open), so a stack from pool_get
 * passes through a frame of the library before it reaches the program:
 * walking out of it needs the library's unwind table. */
#include <stdlib.h>

#define BUFFER_BYTES 256
#define KEPT 16

static void *kept[KEPT];
static int kept_count;

/* A buffer of at least `size` bytes: a kept one when it fits. */
__attribute__((noinline)) void *pool_get(size_t size) {
    if (size <= BUFFER_BYTES && kept_count > 0) {
        return kept[--kept_count];
    }
    return malloc(size <= BUFFER_BYTES ? BUFFER_BYTES : size);
}

/* Gives a buffer back: kept for reuse while there is room. */
__attribute__((noinline)) void pool_put(void *buffer) {
    if (kept_count < KEPT) {
        kept[kept_count++] = buffer;
        return;
    }
    free(buffer);
}

/* A session's buffer, taken by the library's own code. */
__attribute__((noinline)) void *session_open(size_t size) {
    void *session = pool_get(size);
    if (session != NULL) {
        *(volatile char *)session = 0;
    }
    return session;
}
