/* Prints "ready", then naps 1 ms at a time until SIGUSR1 arrives; prints "got SIGUSR1".
 * Each nap is a syscall, so variants keep meeting the monitor while they wait. */
#include <signal.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t got;

static void on_usr1(int signum) {
    (void)signum;
    got = 1;
}

int main(void) {
    struct sigaction action = {0};
    action.sa_handler = on_usr1;
    sigaction(SIGUSR1, &action, NULL);
    write(1, "ready\n", 6);
    struct timespec nap = {0, 1000000};
    for (long naps = 0; !got && naps < 60000; naps++)
        nanosleep(&nap, NULL);
    printf(got ? "got SIGUSR1\n" : "timed out\n");
    return 0;
}
