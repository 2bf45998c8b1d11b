/* A CPU-bound program with a fast timer whose handler makes syscalls.
 *
 * usage: ticker HZ WORK MIN_TICKS
 * A POSIX timer fires HZ times a second; the handler counts ticks and writes to
 * /dev/null. Main computes a checksum over WORK million steps with no syscall,
 * then blocks the timer's signal and prints the checksum and whether at least
 * MIN_TICKS ticks were handled. Where a tick lands is up to the machine, but
 * the output and the sequence of syscalls are not. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t ticks;
static int devnull;

static void on_tick(int signum) {
    (void)signum;
    ticks++;
    write(devnull, "t", 1);
}

int main(int argc, char **argv) {
    long hz = argc > 1 ? atol(argv[1]) : 1000;
    long work = argc > 2 ? atol(argv[2]) : 20;
    long min_ticks = argc > 3 ? atol(argv[3]) : 1;
    devnull = open("/dev/null", O_WRONLY);

    struct sigaction action = {0};
    action.sa_handler = on_tick;
    action.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &action, NULL);

    timer_t timer;
    struct sigevent event = {0};
    event.sigev_notify = SIGEV_SIGNAL;
    event.sigev_signo = SIGALRM;
    timer_create(CLOCK_MONOTONIC, &event, &timer);
    struct itimerspec period = {{0, 1000000000L / hz}, {0, 1000000000L / hz}};
    timer_settime(timer, 0, &period, NULL);

    unsigned long long checksum = 1469598103934665603ULL;
    for (long i = 0; i < work * 1000000L; i++)
        checksum = (checksum ^ (unsigned long long)i) * 1099511628211ULL;

    sigset_t alarm_only;
    sigemptyset(&alarm_only);
    sigaddset(&alarm_only, SIGALRM);
    sigprocmask(SIG_BLOCK, &alarm_only, NULL);
    timer_delete(timer);
    printf("checksum %llx ticks>=%ld %s\n", checksum, min_ticks, ticks >= min_ticks ? "yes" : "no");
    return 0;
}
