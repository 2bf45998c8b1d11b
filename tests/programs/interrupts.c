/* Blocking syscalls interrupted by a signal, with or without SA_RESTART.
 *
 * usage: interrupts restart|norestart
 * Each step arms a one-shot 20 ms ITIMER_REAL and blocks: pause, sigsuspend,
 * nanosleep, read on an empty pipe. The SIGALRM handler writes a byte into the
 * pipe, so a restarted read completes. Prints what each call returned. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int pipe_fds[2];
static volatile sig_atomic_t handled;

static void on_alarm(int signum) {
    (void)signum;
    handled++;
    write(pipe_fds[1], "x", 1);
}

static void arm(void) {
    struct itimerval once = {{0, 0}, {0, 20000}};
    setitimer(ITIMER_REAL, &once, NULL);
}

static void report(const char *what, long result) {
    printf("%s: %ld %s handled=%d\n", what, result, result < 0 ? strerror(errno) : "-", (int)handled);
    fflush(stdout);
}

static void drain(void) {
    char byte;
    while (handled && read(pipe_fds[0], &byte, 1) == 1 && --handled) {
    }
    handled = 0;
}

int main(int argc, char **argv) {
    int restart = argc > 1 && strcmp(argv[1], "restart") == 0;
    pipe(pipe_fds);
    struct sigaction action = {0};
    action.sa_handler = on_alarm;
    action.sa_flags = restart ? SA_RESTART : 0;
    sigaction(SIGALRM, &action, NULL);

    arm();
    report("pause", pause());
    drain();

    sigset_t none;
    sigemptyset(&none);
    arm();
    report("sigsuspend", sigsuspend(&none));
    drain();

    struct timespec long_sleep = {10, 0}, left;
    arm();
    report("nanosleep", nanosleep(&long_sleep, &left));
    drain();

    char byte = 0;
    arm();
    long got = read(pipe_fds[0], &byte, 1);
    report(restart ? "read (restarted)" : "read", got);
    printf("byte %c\n", got == 1 ? byte : '-');
    return 0;
}
