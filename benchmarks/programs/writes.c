/* Syscall-heavy workload: N one-byte writes to /dev/null (N = argv[1]).
 * Exits 0 when every write returned 1, 1 otherwise. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    long count = argc > 1 ? atol(argv[1]) : 200000;
    int fd = open("/dev/null", O_WRONLY);
    if (fd < 0) {
        perror("open /dev/null");
        return 1;
    }
    for (long i = 0; i < count; i++) {
        if (write(fd, "x", 1) != 1) {
            perror("write");
            return 1;
        }
    }
    close(fd);
    return 0;
}
