/* Signal-heavy workload: N self-sent SIGUSR1 (kill(getpid()), argv[1], default
 * 100000), each handled, while a POSIX timer sends SIGALRM HZ times a second
 * (argv[2], default 200; 0: no timer). Prints the number of SIGUSR1 handled.
 * Keep HZ well below the monitor's signal rate: a timer that fires faster than a
 * delivery round trip leaves the program no time to run between handlers. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t usr1, alarms;

static void on_usr1(int signum)
{
    (void)signum;
    usr1++;
}

static void on_alarm(int signum)
{
    (void)signum;
    alarms++;
}

static void install(int signum, void (*handler)(int))
{
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = handler;
    action.sa_flags = SA_RESTART;
    sigaction(signum, &action, NULL);
}

int main(int argc, char **argv)
{
    long count = argc > 1 ? atol(argv[1]) : 100000;
    long hz = argc > 2 ? atol(argv[2]) : 200;
    install(SIGUSR1, on_usr1);
    install(SIGALRM, on_alarm);
    timer_t timer;
    if (hz > 0) {
        struct sigevent event;
        memset(&event, 0, sizeof event);
        event.sigev_notify = SIGEV_SIGNAL;
        event.sigev_signo = SIGALRM;
        if (timer_create(CLOCK_MONOTONIC, &event, &timer) != 0) {
            perror("timer_create");
            return 1;
        }
        struct itimerspec period = {{0, 1000000000L / hz}, {0, 1000000000L / hz}};
        timer_settime(timer, 0, &period, NULL);
    }
    pid_t self = getpid();
    for (long i = 0; i < count; i++)
        kill(self, SIGUSR1);
    if (hz > 0)
        timer_delete(timer);
    printf("usr1 %ld\n", (long)usr1);
    return usr1 == count ? 0 : 1;
}
