/* Exercises files, stdio, identity and time syscalls; output is deterministic. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "files.out";
    char buf[256];
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { perror("open"); return 1; }
    for (int i = 0; i < 100; i++) {
        int n = snprintf(buf, sizeof buf, "line %d\n", i);
        if (write(fd, buf, n) != n) return 2;
    }
    close(fd);
    struct stat st;
    if (stat(path, &st) != 0) return 3;
    fd = open(path, O_RDONLY);
    ssize_t got = read(fd, buf, sizeof buf - 1);
    close(fd);
    buf[got > 0 ? got : 0] = 0;
    printf("size=%lld first=%.7s pid_consistent=%d\n", (long long)st.st_size, buf,
           getpid() == getpid());
    fflush(stdout);
    unlink(path);
    return 7;
}
