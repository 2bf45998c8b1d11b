/* Creates the file named by PATH_SUFFIX appended to argv[1]: builds with different
 * suffixes diverge at open's path argument, before any file is created. */
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#ifndef PATH_SUFFIX
#define PATH_SUFFIX "a"
#endif

int main(int argc, char **argv) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", argc > 1 ? argv[1] : ".", PATH_SUFFIX);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0) { perror("open"); return 1; }
    write(fd, "created\n", 8);
    return close(fd);
}
