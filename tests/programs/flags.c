/* The C idioms of a handler that only sets a flag, under a timer.
 *
 * usage: flags spin|check [PERIOD_US]
 *   spin   a one-shot 20 ms ITIMER_REAL; main computes `while (!flag) work();` with no
 *          syscall until the handler's flag ends the loop; prints "done spin".
 *   check  an ITIMER_REAL every PERIOD_US (1000: 1 kHz); main repeats
 *          `work(); if (flag) {...} write(...)`:
 *          the flag is tested between two syscalls, 50 times; prints "done check 50".
 * The handler makes no syscall. Output and the sequence of syscalls do not depend on
 * where the ticks land. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

static volatile sig_atomic_t flag;
static volatile unsigned long sink;

static void on_alarm(int signum) {
    (void)signum;
    flag = 1;
}

static void work(void) {
    for (int i = 0; i < 20000; i++)
        sink = sink * 6364136223846793005UL + (unsigned long)i;
}

int main(int argc, char **argv) {
    int check = argc > 1 && strcmp(argv[1], "check") == 0;
    struct sigaction action = {0};
    action.sa_handler = on_alarm;
    action.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &action, NULL);
    if (!check) {
        struct itimerval once = {{0, 0}, {0, 20000}};
        setitimer(ITIMER_REAL, &once, NULL);
        while (!flag)
            work();
        printf("done spin\n");
        return 0;
    }
    int devnull = open("/dev/null", O_WRONLY);
    long us = argc > 2 ? atol(argv[2]) : 1000;
    struct itimerval period = {{0, us}, {0, us}};
    setitimer(ITIMER_REAL, &period, NULL);
    int seen = 0;
    for (;;) {
        work();
        if (flag) {
            flag = 0;
            if (++seen == 50)
                break;
        }
        write(devnull, "x", 1);
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    printf("done check %d\n", seen);
    return 0;
}
