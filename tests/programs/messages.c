/* Messages and epoll instances beyond the plain calls (issue 11's gaps), by MODE:
 *   mmsg      sendmmsg of three datagrams and recvmmsg of them into buffers at
 *             layout-dependent addresses, with a timeout the kernel updates
 *   rights    a file descriptor passed over a socketpair (SCM_RIGHTS) and used
 *   epoll-dup an epoll instance set up through one fd and waited on through dups of it */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "show.h"

static int mmsg(void) {
    int pair[2];
    SHOW("socketpair", socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, pair));
    char *texts[3] = {"alpha", "bravo!", "charlie"};
    struct iovec out_iov[3];
    struct mmsghdr out[3];
    memset(out, 0, sizeof out);
    for (int i = 0; i < 3; i++) {
        out_iov[i] = (struct iovec){.iov_base = texts[i], .iov_len = strlen(texts[i])};
        out[i].msg_hdr.msg_iov = &out_iov[i];
        out[i].msg_hdr.msg_iovlen = 1;
        out[i].msg_len = (unsigned)(uintptr_t)&out[i];  /* the kernel's to set */
    }
    SHOW("sendmmsg", sendmmsg(pair[0], out, 3, 0));
    for (int i = 0; i < 3; i++) printf("sent %u\n", out[i].msg_len);
    char buffers[4][16];
    struct iovec in_iov[4];
    struct mmsghdr in[4];
    memset(in, 0, sizeof in);
    memset(buffers, '.', sizeof buffers);
    for (int i = 0; i < 4; i++) {
        in_iov[i] = (struct iovec){.iov_base = buffers[i], .iov_len = sizeof buffers[i] - 1};
        in[i].msg_hdr.msg_iov = &in_iov[i];
        in[i].msg_hdr.msg_iovlen = 1;
    }
    struct timespec timeout = {.tv_sec = 5, .tv_nsec = (uintptr_t)&timeout % 1000};
    SHOW("recvmmsg", recvmmsg(pair[1], in, 4, MSG_WAITFORONE, &timeout));
    for (int i = 0; i < 4; i++) {
        buffers[i][15] = 0;
        printf("received %u flags %d [%s]\n", in[i].msg_len, in[i].msg_hdr.msg_flags, buffers[i]);
    }
    printf("time left %s\n", timeout.tv_sec <= 5 ? "at most 5 s" : "more");
    SHOW("recvmmsg empty", recvmmsg(pair[1], in, 4, MSG_DONTWAIT, NULL));
    return 0;
}

static int rights(const char *self) {
    int pair[2];
    SHOW("socketpair", socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair));
    int fd = open(self, O_RDONLY | O_CLOEXEC);
    char data = 'x';
    struct iovec iov = {.iov_base = &data, .iov_len = 1};
    union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } control;
    struct msghdr message = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                             .msg_controllen = sizeof control.buf};
    struct cmsghdr *header = CMSG_FIRSTHDR(&message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(header), &fd, sizeof fd);
    SHOW("sendmsg", sendmsg(pair[0], &message, 0));
    memset(control.buf, 0, sizeof control.buf);
    message.msg_controllen = sizeof control.buf;
    SHOW("recvmsg", recvmsg(pair[1], &message, MSG_CMSG_CLOEXEC));
    int received;
    memcpy(&received, CMSG_DATA(CMSG_FIRSTHDR(&message)), sizeof received);
    struct stat mine, theirs;
    fstat(fd, &mine);
    fstat(received, &theirs);
    printf("the same file %d\n", mine.st_ino == theirs.st_ino);
    return 0;
}

static int epoll_dup(void) {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    int efd = eventfd(1, EFD_CLOEXEC);
    int marker, other;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &marker};
    SHOW("epoll_ctl", epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev));
    int copy = dup(ep);
    struct epoll_event ready = {0};
    SHOW("epoll_wait dup", epoll_wait(copy, &ready, 1, 1000));
    printf("cookie is ours %d\n", ready.data.ptr == &marker);
    int high = fcntl(ep, F_DUPFD_CLOEXEC, 20);
    SHOW("close", close(ep));
    ev.data.ptr = &other;
    SHOW("epoll_ctl through a dup", epoll_ctl(high, EPOLL_CTL_MOD, efd, &ev));
    ready.data.ptr = NULL;
    SHOW("epoll_pwait other dup", epoll_pwait(copy, &ready, 1, 1000, NULL));
    printf("cookie is ours %d\n", ready.data.ptr == &other);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc == 2 && !strcmp(argv[1], "mmsg")) return mmsg();
    if (argc == 2 && !strcmp(argv[1], "rights")) return rights(argv[0]);
    if (argc == 2 && !strcmp(argv[1], "epoll-dup")) return epoll_dup();
    fprintf(stderr, "usage: messages mmsg|rights|epoll-dup\n");
    return 2;
}
