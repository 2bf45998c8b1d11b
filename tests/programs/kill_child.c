/* A parent that signals its child and waits for it as GNU timeout and dash do: SIGCHLD
 * blocked but in sigsuspend. The child (its SIGUSR1 handler inherited, so no start-up
 * race) naps 1 ms at a time until it has SIGUSR1, naps a little more, and exits 7; the
 * parent sends it SIGUSR1 twice in a row (the kernel may coalesce the two: it prints
 * only whether it had one) and prints the status it reaped.
 * Prints "got SIGUSR1: 1" and "child status 7". */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t got;

static void on_usr1(int signum) {
    (void)signum;
    got = 1;
}

static void on_chld(int signum) {
    (void)signum;
}

int main(void) {
    struct sigaction action = {0};
    action.sa_handler = on_usr1;
    sigaction(SIGUSR1, &action, NULL);
    action.sa_handler = on_chld;
    sigaction(SIGCHLD, &action, NULL);
    sigset_t chld, unblocked;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, &unblocked);
    sigdelset(&unblocked, SIGCHLD);
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        struct timespec nap = {0, 1000000};
        for (long naps = 0; !got && naps < 10000; naps++)
            nanosleep(&nap, NULL);
        for (int more = 0; more < 5; more++)
            nanosleep(&nap, NULL);
        printf("got SIGUSR1: %d\n", got);
        fflush(stdout);
        _exit(7);
    }
    kill(child, SIGUSR1);
    kill(child, SIGUSR1);
    int status;
    while (waitpid(child, &status, WNOHANG) == 0)
        sigsuspend(&unblocked);
    printf("child status %d\n", WEXITSTATUS(status));
    return 0;
}
