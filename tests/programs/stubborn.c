/* Prints "ready", then naps 1 ms at a time for up to 60 s. SIGINT, SIGTERM and
 * SIGHUP are caught: the handler prints "got <signal number>" and the naps go on,
 * so only a SIGKILL (or the monitor giving up) ends it early. */
#include <signal.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static void on_signal(int signum) {
    char text[16];
    int n = snprintf(text, sizeof text, "got %d\n", signum);
    write(1, text, n);
}

int main(void) {
    struct sigaction action = {0};
    action.sa_handler = on_signal;
    action.sa_flags = SA_RESTART;
    sigaction(SIGINT, &action, NULL);
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGHUP, &action, NULL);
    write(1, "ready\n", 6);
    struct timespec nap = {0, 1000000};
    for (long naps = 0; naps < 60000; naps++)
        nanosleep(&nap, NULL);
    write(1, "done\n", 5);
    return 0;
}
