/* Prints "before", then writes MESSAGE to stdout and to the file argv[1].
 * Two builds with different MESSAGE diverge at the second write's buffer. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#ifndef MESSAGE
#define MESSAGE "same"
#endif

int main(int argc, char **argv) {
    write(1, "before\n", 7);
    write(1, MESSAGE "\n", strlen(MESSAGE) + 1);
    if (argc > 1) {
        int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
        write(fd, MESSAGE, strlen(MESSAGE));
        close(fd);
    }
    return 0;
}
