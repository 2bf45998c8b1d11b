/* A clock-heavy loop: clock_loop clock|tsc N reads the clock N times (clock_gettime,
 * MONOTONIC) or the time-stamp counter (rdtsc) and prints how far it moved. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static unsigned long long rdtsc(void) {
    unsigned int lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return (unsigned long long)hi << 32 | lo;
}

int main(int argc, char **argv) {
    int tsc = argc > 1 && strcmp(argv[1], "tsc") == 0;
    long count = argc > 2 ? atol(argv[2]) : 1000;
    unsigned long long first = 0, last = 0;
    for (long i = 0; i < count; i++) {
        struct timespec now;
        if (tsc) {
            last = rdtsc();
        } else {
            clock_gettime(CLOCK_MONOTONIC, &now);
            last = (unsigned long long)now.tv_sec * 1000000000ull + now.tv_nsec;
        }
        if (i == 0)
            first = last;
    }
    printf("%ld reads, moved %llu\n", count, last - first);
    return 0;
}
