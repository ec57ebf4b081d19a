/* A seed for the ELF fuzz targets, compiled by `cargo xtask fuzz` with
   full DWARF: an out-of-line `allocate` returning a struct through a
   hidden slot, an inlined `release` whose parameter DWARF locates, calls
   through the PLT. */
#include <stdlib.h>

struct buf {
    char *ptr;
    size_t capacity;
    size_t len;
};

__attribute__((noinline)) struct buf allocate(size_t size) {
    struct buf buf = {malloc(size), size, 0};
    return buf;
}

static inline __attribute__((always_inline)) void release(struct buf *buf) {
    free(buf->ptr);
}

int main(int argc, char **argv) {
    (void)argv;
    struct buf buf = allocate((size_t)argc * 64);
    int failed = buf.ptr == NULL;
    release(&buf);
    return failed;
}
