/* Anonymous memory and writes: argv[1] anonymous mmaps of a page (each touched; no
 * MAP_FIXED), then argv[2] one-byte writes to /dev/null, and the same through int 0x80
 * from 64-bit code when argv[3] is "int80" (i386's getpid, the filter's other ABI).
 * Prints what it did. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static long getpid_int80(void)
{
    long result = 20; /* i386 getpid */
    __asm__ volatile("int $0x80" : "+a"(result) : : "memory");
    return result;
}

int main(int argc, char **argv)
{
    long maps = argc > 1 ? atol(argv[1]) : 1000;
    long writes = argc > 2 ? atol(argv[2]) : 1000;
    int int80 = argc > 3 && strcmp(argv[3], "int80") == 0;
    long touched = 0;
    for (long i = 0; i < maps; i++) {
        char *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (page == MAP_FAILED) {
            perror("mmap");
            return 1;
        }
        page[0] = 1;
        touched += page[0];
    }
    int fd = open("/dev/null", O_WRONLY);
    for (long i = 0; i < writes; i++) {
        if (write(fd, "x", 1) != 1) {
            perror("write");
            return 1;
        }
    }
    long pid = int80 ? getpid_int80() : getpid();
    printf("mapped %ld wrote %ld same pid %d\n", touched, writes, pid == getpid());
    return 0;
}
