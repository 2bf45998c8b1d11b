/* A writable shared mapping of a file's second page, which a forked child writes too:
 * the parent sees the child's bytes, and the file gets them.
 * Prints "ready" once the child is done, naps 1.5 s (the test looks at the mappings),
 * then what the mapping and the file hold. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(void) {
    char page[4096];
    memset(page, '.', sizeof page);
    int fd = open("shared", O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, page, sizeof page) != sizeof page || write(fd, page, sizeof page) != sizeof page)
        return 1;
    char *map = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 4096);
    if (map == MAP_FAILED)
        return 2;
    memcpy(map, "hello", 5);
    pid_t child = fork();
    if (child == 0) {
        memcpy(map + 5, "child", 5);
        _exit(0);
    }
    waitpid(child, NULL, 0);
    printf("ready\n");
    fflush(stdout);
    struct timespec nap = {1, 500000000};
    nanosleep(&nap, NULL);
    msync(map, 4096, MS_SYNC);
    char file[11] = {0};
    pread(fd, file, 10, 4096);
    printf("map %.11s file %s\n", map, file);
    return 0;
}
