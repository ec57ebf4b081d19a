/* A C program that loads its buffer pool (libdlpool.so, found through
 * its RUNPATH $ORIGIN) with dlopen only when told to: the target of an
 * observer attached before the library is mapped. It talks over raw
 * read/write: "ready" once started; on "load" it dlopens the library and
 * answers "loaded"; then one round of work per "go" line, answered with
 * "done: N leaked". The first round keeps 20 connections' buffers of 64
 * bytes that nothing gives back (the planted leak; taken through the
 * library's session_open) among 100 requests whose buffers go back to the
 * pool. */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define REQUESTS 100
#define LEAKS 20
#define LEAK_BYTES 64

static void *(*pool_get)(size_t);
static void (*pool_put)(void *);
static void *(*session_open)(size_t);
static void *connections[LEAKS];

static void say(const char *line) {
    if (write(1, line, strlen(line)) < 0) {
        exit(1);
    }
}

/* Keeps a connection's buffer that nothing ever gives back. */
__attribute__((noinline)) static void keep_connection(int i) {
    connections[i] = session_open(LEAK_BYTES);
    memset(connections[i], i, LEAK_BYTES);
}

/* A request buffer, given back before the request ends. */
__attribute__((noinline)) static void handle_request(int i) {
    char *buf = pool_get(100 + (size_t)i);
    memset(buf, i, 100 + (size_t)i);
    pool_put(buf);
}

static void load(void) {
    void *library = dlopen("libdlpool.so", RTLD_NOW);
    if (library == NULL) {
        say("cannot load libdlpool.so\n");
        exit(1);
    }
    pool_get = (void *(*)(size_t))dlsym(library, "pool_get");
    pool_put = (void (*)(void *))dlsym(library, "pool_put");
    session_open = (void *(*)(size_t))dlsym(library, "session_open");
    if (pool_get == NULL || pool_put == NULL || session_open == NULL) {
        say("libdlpool.so lacks pool_get, pool_put or session_open\n");
        exit(1);
    }
    say("loaded\n");
}

int main(void) {
    char command[16];
    say("ready\n");
    int round = 0;
    ssize_t length;
    while ((length = read(0, command, sizeof command)) > 0) {
        if (length >= 4 && memcmp(command, "load", 4) == 0) {
            load();
            continue;
        }
        if (pool_get == NULL) {
            say("not loaded\n");
            continue;
        }
        for (int i = 0; i < REQUESTS; i++) {
            handle_request(i);
            if (i % (REQUESTS / LEAKS) == 0 && round == 0) {
                keep_connection(i / (REQUESTS / LEAKS));
            }
        }
        round++;
        say(round == 1 ? "done: 20 leaked\n" : "done: 0 leaked\n");
    }
    return 0;
}
