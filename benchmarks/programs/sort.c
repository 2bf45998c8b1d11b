/* CPU-bound integer kernel: heap sort of LCG-generated 64-bit keys, repeated, no
 * syscall in the hot loop (heap sort, not qsort: no allocation inside).
 * usage: sort COUNT ROUNDS -- prints a checksum of the sorted keys. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static void sift_down(uint64_t *keys, size_t start, size_t end) {
    size_t root = start;
    while (2 * root + 1 < end) {
        size_t child = 2 * root + 1;
        if (child + 1 < end && keys[child] < keys[child + 1])
            child++;
        if (keys[root] >= keys[child])
            return;
        uint64_t swap = keys[root];
        keys[root] = keys[child];
        keys[child] = swap;
        root = child;
    }
}

static void heap_sort(uint64_t *keys, size_t count) {
    for (size_t start = count / 2; start-- > 0;)
        sift_down(keys, start, count);
    for (size_t end = count; end-- > 1;) {
        uint64_t swap = keys[0];
        keys[0] = keys[end];
        keys[end] = swap;
        sift_down(keys, 0, end);
    }
}

int main(int argc, char **argv) {
    size_t count = argc > 1 ? (size_t)atol(argv[1]) : 1000000;
    long rounds = argc > 2 ? atol(argv[2]) : 4;
    uint64_t *keys = malloc(count * sizeof *keys);
    if (!keys || count == 0)
        return 1;
    uint64_t state = 1, checksum = 0;
    for (long round = 0; round < rounds; round++) {
        for (size_t i = 0; i < count; i++) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            keys[i] = state ^ (state >> 29);
        }
        heap_sort(keys, count);
        for (size_t i = 0; i < count; i += count / 64 + 1)
            checksum = checksum * 1099511628211ull ^ keys[i];
        if (keys[0] > keys[count - 1])
            return 2;
    }
    printf("sorted %zu x%ld checksum %llx\n", count, rounds, (unsigned long long)checksum);
    free(keys);
    return 0;
}
