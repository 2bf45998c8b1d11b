/* One client on 127.0.0.1:PORT, waited for with poll (its revents left as the stack has
 * them, which differs between layouts), read with select and recvfrom, answered in
 * upper case with sendto. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int listener = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1])),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) || listen(listener, 1)) { perror("bind"); return 1; }
    puts("ready");
    fflush(stdout);
    struct pollfd wait_for = {.fd = listener, .events = POLLIN, .revents = (short)(uintptr_t)&addr};
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int timeout_ms = 20000 - (int)(now.tv_nsec % 1000);  /* from a clock read: differs */
    if (poll(&wait_for, 1, timeout_ms) != 1 || !(wait_for.revents & POLLIN)) { puts("poll"); return 1; }
    int fd = accept(listener, NULL, NULL);
    fd_set readable;
    FD_ZERO(&readable);
    FD_SET(fd, &readable);
    struct timeval tv = {.tv_sec = 20, .tv_usec = now.tv_nsec / 1000 % 1000};
    int n = select(fd + 1, &readable, NULL, NULL, &tv);
    printf("select %d %d\n", n, FD_ISSET(fd, &readable) ? 1 : 0);
    char buf[256];
    struct sockaddr_storage from;
    socklen_t fromlen = sizeof from;
    ssize_t got = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fromlen);
    for (ssize_t i = 0; i < got; i++) buf[i] = toupper((unsigned char)buf[i]);
    sendto(fd, buf, got > 0 ? got : 0, 0, NULL, 0);
    int error = -1;
    socklen_t elen = sizeof error;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &elen);
    printf("got %zd bytes, so_error %d (len %u)\n", got, error, (unsigned)elen);
    shutdown(fd, SHUT_WR);
    close(fd);
    return 0;
}
