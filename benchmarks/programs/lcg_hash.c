/* CPU-bound integer kernel: an LCG feeding an open-addressing hash table (insert and
 * look up), no syscall in the hot loop.
 * usage: lcg_hash STEPS_MILLIONS -- prints hits and a checksum. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define TABLE_BITS 18
#define TABLE_SIZE (1u << TABLE_BITS)

int main(int argc, char **argv) {
    long steps = (argc > 1 ? atol(argv[1]) : 50) * 1000000L;
    uint64_t *table = calloc(TABLE_SIZE, sizeof *table);
    if (!table)
        return 1;
    uint64_t state = 88172645463325252ull, hits = 0, checksum = 0;
    for (long i = 0; i < steps; i++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t key = (state >> 47) | 1;  /* 17 bits: the table ends half full, most lookups hit */
        uint32_t slot = (uint32_t)((key * 0x9e3779b97f4a7c15ull) >> (64 - TABLE_BITS));
        for (uint32_t probe = 0; probe < 64; probe++) {
            uint32_t at = (slot + probe) & (TABLE_SIZE - 1);
            if (table[at] == key) {
                hits++;
                checksum ^= key + at;
                break;
            }
            if (table[at] == 0) {
                table[at] = key;
                break;
            }
        }
    }
    printf("hits %llu checksum %llx\n", (unsigned long long)hits, (unsigned long long)checksum);
    free(table);
    return 0;
}
