/* Prints "ready", then naps 1 ms at a time for up to 60 s.
 * usage: stubborn [catch|hups|block]
 *   catch (default)  SIGINT, SIGTERM and SIGHUP are caught: the handler prints
 *                    "got <signal number>" and the naps go on, so only a SIGKILL (or
 *                    the monitor giving up) ends it early.
 *   hups             a daemon that reloads on SIGHUP: "hup <n>" for each; SIGTERM
 *                    keeps its default action and ends it.
 *   block            SIGINT, SIGTERM and SIGHUP are blocked: none is ever taken. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int hups;

static void on_signal(int signum) {
    char text[16];
    int n = signum == SIGHUP && hups >= 0 ? snprintf(text, sizeof text, "hup %d\n", ++hups)
                                          : snprintf(text, sizeof text, "got %d\n", signum);
    write(1, text, n);
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "catch";
    struct sigaction action = {0};
    action.sa_handler = on_signal;
    action.sa_flags = SA_RESTART;
    if (strcmp(mode, "hups") == 0) {
        sigaction(SIGHUP, &action, NULL);
    } else if (strcmp(mode, "block") == 0) {
        sigset_t ending;
        sigemptyset(&ending);
        sigaddset(&ending, SIGINT);
        sigaddset(&ending, SIGTERM);
        sigaddset(&ending, SIGHUP);
        sigprocmask(SIG_BLOCK, &ending, NULL);
    } else {
        hups = -1;  /* SIGHUP prints "got 1" like the others */
        sigaction(SIGINT, &action, NULL);
        sigaction(SIGTERM, &action, NULL);
        sigaction(SIGHUP, &action, NULL);
    }
    write(1, "ready\n", 6);
    struct timespec nap = {0, 1000000};
    for (long naps = 0; naps < 60000; naps++)
        nanosleep(&nap, NULL);
    write(1, "done\n", 5);
    return 0;
}
