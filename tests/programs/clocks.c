/* Reads the clock in every way a program can: clocks.c MODE COUNT
 *   clock N  clock_gettime (REALTIME, MONOTONIC), gettimeofday and time, N times
 *   tsc N    rdtsc and rdtscp, N times (non-decreasing, checked here)
 *   vdso     whether the C library was given a vDSO (AT_SYSINFO_EHDR)
 * Built with -DEXTRA_TSC, tsc mode reads the counter once more first (a divergence). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/time.h>
#include <time.h>

static unsigned long long rdtsc(void) {
    unsigned int lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return (unsigned long long)hi << 32 | lo;
}

static unsigned long long rdtscp(unsigned int *aux) {
    unsigned int lo, hi;
    __asm__ volatile("rdtscp" : "=a"(lo), "=d"(hi), "=c"(*aux));
    return (unsigned long long)hi << 32 | lo;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "clock";
    int count = argc > 2 ? atoi(argv[2]) : 5;
    if (strcmp(mode, "vdso") == 0) {
        printf("vdso %s\n", getauxval(AT_SYSINFO_EHDR) ? "visible" : "hidden");
        return 0;
    }
    unsigned long long last = 0;
#ifdef EXTRA_TSC
    if (strcmp(mode, "tsc") == 0)
        last = rdtsc();
#endif
    for (int i = 0; i < count; i++) {
        if (strcmp(mode, "tsc") == 0) {
            unsigned int aux;
            unsigned long long a = rdtsc(), b = rdtscp(&aux);
            if (a < last || b < a) {
                printf("tsc went back: %llu %llu %llu\n", last, a, b);
                return 1;
            }
            last = b;
            printf("%llu %llu %u\n", a, b, aux);
            continue;
        }
        struct timespec real, mono;
        struct timeval tv;
        clock_gettime(CLOCK_REALTIME, &real);
        clock_gettime(CLOCK_MONOTONIC, &mono);
        gettimeofday(&tv, NULL);
        printf("%lld.%09ld %lld.%09ld %lld.%06ld %lld\n", (long long)real.tv_sec, real.tv_nsec,
               (long long)mono.tv_sec, mono.tv_nsec, (long long)tv.tv_sec, (long)tv.tv_usec,
               (long long)time(NULL));
    }
    return 0;
}
