/* A C server whose requests go through libc's malloc and free, and whose
 * sessions leak: the target of `observer attach --alloc libc.so.6:malloc`.
 * It talks over raw read/write so that stdio allocates nothing while it is
 * observed: "ready" once started, then one round of work per "go" line,
 * answered with "done: N leaked". */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define REQUESTS 200
#define LEAKS 25
#define LEAK_BYTES 48

static void *sessions[REQUESTS];

/* Keeps a session that nothing ever releases: the planted leak. */
__attribute__((noinline)) static void open_session(int i) {
    sessions[i] = malloc(LEAK_BYTES);
    memset(sessions[i], i, LEAK_BYTES);
}

/* A request buffer, released before the request ends. */
__attribute__((noinline)) static void handle_request(int i) {
    char *buf = malloc(64 + (size_t)i);
    memset(buf, i, 64 + (size_t)i);
    free(buf);
}

static void say(const char *line) {
    if (write(1, line, strlen(line)) < 0) {
        exit(1);
    }
}

int main(void) {
    char command[16];
    /* Bind malloc and free before anyone watches. */
    free(malloc(1));
    say("ready\n");
    int round = 0;
    while (read(0, command, sizeof command) > 0) {
        for (int i = 0; i < REQUESTS; i++) {
            handle_request(i);
            if (i % (REQUESTS / LEAKS) == 0 && round == 0) {
                open_session(i);
            }
        }
        round++;
        say("done: 25 leaked\n");
    }
    return 0;
}
