/*
 * An arm64 target for the observer in the VM: a pool whose buffers come
 * from malloc. ROUNDS buffers of 32 bytes are got and put back; then
 * LEAKS buffers of 48 bytes are got and kept until exit. Probing
 * pool_get and pool_put, an exact observer counts ROUNDS + LEAKS
 * allocations, ROUNDS releases and LEAKS outstanding buffers (48 bytes
 * each), allocated by serve_leaky called from main.
 */
#include <stdio.h>
#include <stdlib.h>

#define BALANCED_SIZE 32
#define LEAKED_SIZE 48

__attribute__((noinline)) void *pool_get(size_t size)
{
	return malloc(size);
}

__attribute__((noinline)) void pool_put(void *buffer)
{
	free(buffer);
}

__attribute__((noinline)) static void serve_balanced(void)
{
	volatile char *buffer = pool_get(BALANCED_SIZE);

	buffer[0] = 1;
	pool_put((void *)buffer);
}

__attribute__((noinline)) static void *serve_leaky(void)
{
	volatile char *buffer = pool_get(LEAKED_SIZE);

	buffer[0] = 2;
	return (void *)buffer;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: pool ROUNDS LEAKS\n");
		return 2;
	}
	long rounds = atol(argv[1]);
	long leaks = atol(argv[2]);
	void **kept = calloc((size_t)leaks + 1, sizeof *kept);

	for (long i = 0; i < rounds; i++)
		serve_balanced();
	for (long i = 0; i < leaks; i++)
		kept[i] = serve_leaky();
	printf("pool: %ld got and put back, %ld kept\n", rounds, leaks);
	return 0;
}
