/* CPU-bound integer kernel: repeated sieve of Eratosthenes, no syscall in the hot loop.
 * usage: sieve LIMIT ROUNDS -- prints the prime count and a checksum. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    long limit = argc > 1 ? atol(argv[1]) : 4000000;
    long rounds = argc > 2 ? atol(argv[2]) : 10;
    unsigned char *composite = malloc((size_t)limit + 1);
    if (!composite)
        return 1;
    long primes = 0;
    unsigned long long checksum = 0;
    for (long round = 0; round < rounds; round++) {
        memset(composite, 0, (size_t)limit + 1);
        primes = 0;
        for (long i = 2; i <= limit; i++) {
            if (composite[i])
                continue;
            primes++;
            checksum = checksum * 31 + (unsigned long long)i;
            if (i <= limit / i)  /* i * i would overflow a 32-bit long */
                for (long j = i * i; j <= limit; j += i)
                    composite[j] = 1;
        }
    }
    printf("primes<=%ld %ld checksum %llx\n", limit, primes, checksum);
    free(composite);
    return 0;
}
