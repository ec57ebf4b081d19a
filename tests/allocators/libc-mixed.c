/* A C server that uses every allocate function of libc's allocator —
 * malloc, calloc, realloc (growing and moving buffers, from NULL, to size
 * 0, and failing), posix_memalign, aligned_alloc, memalign — and free,
 * with two planted leaks: the target of `observer attach --preset libc`.
 * It talks over raw read/write so that stdio allocates nothing while it is
 * observed: "ready" once started, then one round of work per "go" line,
 * answered with "done: N leaked". Only the first round leaks. */
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define REQUESTS 200
#define SESSIONS 25
#define SESSION_BYTES 48
#define CACHED 10
#define CACHE_BYTES 80

static void *sessions[SESSIONS];
static void *cache[CACHED];
/* Too large for any allocator (over PTRDIFF_MAX): realloc fails at once.
 * Volatile, so the compiler cannot see the size and warn. */
static volatile size_t impossible = SIZE_MAX / 2 + 1;

/* A session starts zeroed and small, and grows to its final size:
 * nothing releases it. Leak 1: the realloc's buffer, at this realloc. */
__attribute__((noinline)) static void open_session(int i) {
    char *session = calloc(1, 16);
    sessions[i] = realloc(session, SESSION_BYTES);
    memset(sessions[i], i, SESSION_BYTES);
}

/* Leak 2: aligned cache entries nothing releases. */
__attribute__((noinline)) static void fill_cache(int i) {
    if (posix_memalign(&cache[i], 64, CACHE_BYTES) != 0) {
        exit(1);
    }
    memset(cache[i], i, CACHE_BYTES);
}

/* A request grows its buffer twice (the second time past what fits in
 * place, so it moves), keeps it when a third growth fails, and frees it. */
__attribute__((noinline)) static void handle_request(int i) {
    char *buf = malloc(32);
    memset(buf, i, 32);
    buf = realloc(buf, 64 + (size_t)i);
    buf[0] = (char)i;
    buf = realloc(buf, 8192 + 16 * (size_t)i);
    buf[1] = (char)i;
    char *failed = realloc(buf, impossible);
    if (failed != NULL) {
        exit(1);
    }
    free(buf);
}

/* The other ways to get memory, each released. */
__attribute__((noinline)) static void scratch(int i) {
    int *counts = calloc(4, 16 + (size_t)i);
    counts[0] = i;
    free(counts);
    void *line = NULL;
    if (posix_memalign(&line, 128, 256) != 0) {
        exit(1);
    }
    free(line);
    char *page = aligned_alloc(4096, 4096);
    page[0] = (char)i;
    free(page);
    char *block = memalign(32, 100);
    block[0] = (char)i;
    free(block);
    /* realloc(NULL, n) is malloc(n). */
    char *fresh = realloc(NULL, 40);
    fresh[0] = (char)i;
    free(fresh);
    /* glibc's realloc(p, 0) frees p and returns NULL; musl's returns a
     * new smallest buffer, released here. */
    char *gone = malloc(24);
    gone[0] = (char)i;
    free(realloc(gone, 0));
}

static void say(const char *line) {
    if (write(1, line, strlen(line)) < 0) {
        exit(1);
    }
}

int main(void) {
    char command[16];
    /* Bind every function before anyone watches. */
    scratch(0);
    handle_request(0);
    say("ready\n");
    int round = 0;
    while (read(0, command, sizeof command) > 0) {
        for (int i = 0; i < REQUESTS; i++) {
            handle_request(i);
            scratch(i);
            if (round == 0 && i % (REQUESTS / SESSIONS) == 0) {
                open_session(i / (REQUESTS / SESSIONS));
            }
            if (round == 0 && i % (REQUESTS / CACHED) == 0) {
                fill_cache(i / (REQUESTS / CACHED));
            }
        }
        round++;
        say(round == 1 ? "done: 35 leaked\n" : "done: 0 leaked\n");
    }
    return 0;
}
