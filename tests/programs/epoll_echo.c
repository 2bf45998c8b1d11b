/* An epoll echo server on 127.0.0.1:PORT: serves CLIENTS connections (0: until a signal
 * ends it), echoing what each sends with recvmsg/sendmsg. Each connection's epoll cookie
 * is a pointer to its own heap record, so it differs between the variants' layouts. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

struct conn { int fd; int id; unsigned long bytes; };

int main(int argc, char **argv) {
    int port = atoi(argv[1]), clients = argc > 2 ? atoi(argv[2]) : 0;
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr;  /* sin_zero left as the stack has it */
    addr.sin_family = AF_INET; addr.sin_port = htons(port); addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) || listen(listener, 8)) { perror("bind"); return 1; }
    struct sockaddr_in bound; socklen_t len = sizeof bound;
    getsockname(listener, (struct sockaddr *)&bound, &len);
    printf("listening on %s:%d\n", inet_ntoa(bound.sin_addr), ntohs(bound.sin_port));
    fflush(stdout);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct conn *lconn = malloc(sizeof *lconn);
    lconn->fd = listener; lconn->id = -1;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = lconn};
    epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev);
    int accepted = 0, served = 0;
    while (!clients || served < clients) {
        struct epoll_event ready[4];
        int n = epoll_wait(ep, ready, 4, -1);
        for (int i = 0; i < n; i++) {
            struct conn *c = ready[i].data.ptr;
            if (c->id < 0) {
                struct sockaddr_in peer; socklen_t plen = sizeof peer;
                int fd = accept4(listener, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0) continue;
                struct conn *nc = malloc(sizeof *nc);
                nc->fd = fd; nc->id = accepted++; nc->bytes = 0;
                struct sockaddr_in name; socklen_t nlen = sizeof name;
                getpeername(fd, (struct sockaddr *)&name, &nlen);
                printf("client %d from %s (len %u)\n", nc->id, inet_ntoa(name.sin_addr), (unsigned)nlen);
                struct epoll_event cev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = nc};
                epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                continue;
            }
            char head[3], rest[200];
            struct iovec iov[2] = {{head, sizeof head}, {rest, sizeof rest}};
            struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};
            ssize_t got = recvmsg(c->fd, &msg, 0);
            if (got > 0) {
                c->bytes += got;
                iov[0].iov_len = got < 3 ? got : 3;
                iov[1].iov_len = got - iov[0].iov_len;
                struct msghdr out = {.msg_iov = iov, .msg_iovlen = 2};
                sendmsg(c->fd, &out, MSG_NOSIGNAL);
            } else if (got == 0 || (ready[i].events & (EPOLLHUP | EPOLLRDHUP))) {
                printf("client %d sent %lu bytes\n", c->id, c->bytes);
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                shutdown(c->fd, SHUT_RDWR);
                close(c->fd);
                free(c);
                served++;
            }
        }
        fflush(stdout);
    }
    printf("served %d\n", served);
    return 0;
}
