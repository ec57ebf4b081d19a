/* A C program with two pools of the shapes C code writes: one handing
 * out raw buffers (`void *pool_get(size_t size)`, `pool_put(void *)`),
 * one handing out structs (`struct buf *buf_get(size_t capacity)`,
 * `buf_put(struct buf *)`). Each leaks a known number of buffers on an
 * error path. The target of `observer run` with every location `auto`:
 * C's pointer types have no name in DWARF, and a `void *` handed back
 * must read as the buffer's address, not as a pointer to a guard.
 * Usage: c-pool ROUNDS; it prints what it leaked and exits. */
#include <stdio.h>
#include <stdlib.h>

#define RAW_SIZE 96
#define BUF_CAPACITY 200

struct buf {
    char *data;
    size_t capacity;
};

__attribute__((noinline)) void *pool_get(size_t size) {
    return malloc(size);
}

__attribute__((noinline)) void pool_put(void *buffer) {
    free(buffer);
}

__attribute__((noinline)) struct buf *buf_get(size_t capacity) {
    struct buf *b = malloc(sizeof *b);
    b->data = malloc(capacity);
    b->capacity = capacity;
    return b;
}

__attribute__((noinline)) void buf_put(struct buf *b) {
    free(b->data);
    free(b);
}

/* Every seventh request fails after taking its buffer: the leak. */
__attribute__((noinline)) static int serve_raw(int i) {
    char *buffer = pool_get(RAW_SIZE);
    buffer[0] = (char)i;
    if (i % 7 == 0) {
        return -1;
    }
    pool_put(buffer);
    return 0;
}

__attribute__((noinline)) static int serve_buf(int i) {
    struct buf *b = buf_get(BUF_CAPACITY);
    b->data[0] = (char)i;
    if (i % 5 == 0) {
        return -1;
    }
    buf_put(b);
    return 0;
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 100;
    int raw_leaks = 0, buf_leaks = 0;
    for (int i = 0; i < rounds; i++) {
        raw_leaks += serve_raw(i) != 0;
        buf_leaks += serve_buf(i) != 0;
    }
    printf("leaked: raw %d, buf %d\n", raw_leaks, buf_leaks);
    return 0;
}
