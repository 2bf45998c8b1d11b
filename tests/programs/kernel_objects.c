/* Links, locks and file-descriptor objects in DIR, and arguments that differ between
 * layouts only where the kernel ignores them or reads a clock: utimensat's tv_sec beside
 * UTIME_OMIT, an absolute clock_nanosleep deadline, ppoll/pselect/epoll timeouts. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/select.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "show.h"

#ifndef SYS_fchmodat2
#define SYS_fchmodat2 452  /* Linux 6.6; trixie's glibc calls it in fchmodat */
#endif

int main(int argc, char **argv) {
    if (chdir(argv[1])) return 2;
    int dir = open(".", O_RDONLY | O_DIRECTORY);
    int fd = open("data", O_RDWR | O_CREAT | O_TRUNC, 0644);
    SHOW("write", write(fd, "payload\n", 8));
    SHOW("symlinkat", symlinkat("data", dir, "soft"));
    SHOW("linkat", linkat(dir, "data", dir, "hard", 0));
    SHOW("link", link("data", "hard2"));
    SHOW("fchmodat2", syscall(SYS_fchmodat2, dir, "data", 0600, 0));
    SHOW("symlink", symlink("missing", "dangling"));
    char target[64] = {0};
    SHOW("readlinkat", readlinkat(dir, "soft", target, sizeof target));
    puts(target);
    struct stat st;
    stat("data", &st);
    printf("links %ld\n", (long)st.st_nlink);

    /* Locks: taken by the leader only, so a follower's identical lock does not conflict. */
    struct flock lock = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 4};
    lock.l_pid = (pid_t)(uintptr_t)&lock;  /* ignored by the kernel on a set */
    SHOW("F_SETLK", fcntl(fd, F_SETLK, &lock));
    SHOW("F_SETLKW", fcntl(fd, F_SETLKW, &lock));
    struct flock probe = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    SHOW("F_GETLK", fcntl(fd, F_GETLK, &probe));
    printf("probe type %d\n", probe.l_type);
    struct flock ofd = {.l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 8, .l_len = 4};
    SHOW("F_OFD_SETLK", fcntl(fd, F_OFD_SETLK, &ofd));
    int other = open("data", O_RDWR);
    struct flock ofd2 = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 8, .l_len = 4};
    SHOW("F_OFD_SETLK conflicting", fcntl(other, F_OFD_SETLK, &ofd2));
    SHOW("flock", flock(fd, LOCK_EX | LOCK_NB));
    SHOW("flock other", flock(other, LOCK_EX | LOCK_NB));
    SHOW("F_GETFL", fcntl(fd, F_GETFL) & O_ACCMODE);

    SHOW("fsetxattr", fsetxattr(fd, "user.mvee", "value", 5, 0));
    char value[16] = {0};
    SHOW("getxattr", getxattr("data", "user.mvee", value, sizeof value));
    SHOW("fremovexattr", fremovexattr(fd, "user.mvee"));

    /* utimensat: tv_sec beside UTIME_OMIT is garbage that differs with the layout. */
    struct timespec times[2] = {{.tv_sec = (time_t)(uintptr_t)&st, .tv_nsec = UTIME_OMIT},
                                {.tv_sec = 1000000000, .tv_nsec = 0}};
    SHOW("utimensat", utimensat(dir, "data", times, 0));
    stat("data", &st);
    printf("mtime %ld\n", (long)st.st_mtime);

    /* Deadlines from the clock: absolute, or relative timeouts computed from it. */
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    now.tv_nsec += 2000000 + (long)((uintptr_t)&now % 1000);
    if (now.tv_nsec >= 1000000000) { now.tv_sec++; now.tv_nsec -= 1000000000; }
    SHOW("clock_nanosleep", clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &now, NULL));

    int pair[2];
    SHOW("socketpair", socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair));
    SHOW("send", send(pair[0], "ping", 4, 0));
    struct pollfd pfd = {.fd = pair[1], .events = POLLIN, .revents = (short)(uintptr_t)&pfd};
    struct timespec tmo = {.tv_sec = 1, .tv_nsec = (uintptr_t)&tmo % 1000};
    SHOW("ppoll", ppoll(&pfd, 1, &tmo, NULL));
    printf("revents %d\n", pfd.revents);
    fd_set set;
    FD_ZERO(&set);
    FD_SET(pair[1], &set);
    struct timespec ptmo = {.tv_sec = 0, .tv_nsec = 1000 + (uintptr_t)&ptmo % 1000};
    SHOW("pselect", pselect(pair[1] + 1, &set, NULL, NULL, &ptmo, NULL));
    char buf[8];
    SHOW("recv", recv(pair[1], buf, sizeof buf, 0));

    int efd = eventfd(3, EFD_CLOEXEC);
    uint64_t count = 0;
    SHOW("eventfd read", read(efd, &count, sizeof count));
    printf("count %llu\n", (unsigned long long)count);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    struct itimerspec its = {.it_value = {.tv_nsec = 1000000}};
    SHOW("timerfd_settime", timerfd_settime(tfd, 0, &its, NULL));
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &its};
    SHOW("epoll_ctl", epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev));
    struct epoll_event ready;
    SHOW("epoll_wait", epoll_wait(ep, &ready, 1, 5000 - (int)((uintptr_t)&ready % 1000)));
    printf("cookie is ours %d\n", ready.data.ptr == &its);
    SHOW("timerfd read", read(tfd, &count, sizeof count));
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGUSR2);
    SHOW("signalfd", signalfd(-1, &mask, SFD_CLOEXEC) >= 0);

    unsigned char vec[2];
    char *page = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    page[0] = 1;
    SHOW("mincore", mincore(page, 4096, vec));
    printf("resident %d\n", vec[0] & 1);
    SHOW("setpgid", setpgid(0, 0));
    SHOW("getpgrp is getpid", getpgrp() == getpid());
    SHOW("unlink", unlink("hard2"));
    return 0;
}
