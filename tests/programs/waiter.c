/* Prints "ready", then naps 1 ms at a time until SIGUSR1 arrives; prints "got SIGUSR1".
 * Each nap is a syscall, so variants keep meeting the monitor while they wait.
 * usage: waiter [pause]: with "pause", waits in pause() instead: once every variant is
 * in it, no variant runs its own code until the signal, so the signal meets each of
 * them in the same call (no flag read between two syscalls: see README, Signals).
 * Built with -DSPIN_STEPS=N, it spins N steps after each nap, before it tests the flag:
 * a variant that runs slower than the others between two syscalls. */
#include <signal.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#ifndef SPIN_STEPS
#define SPIN_STEPS 0L
#endif

static volatile sig_atomic_t got;

static void on_usr1(int signum) {
    (void)signum;
    got = 1;
}

int main(int argc, char **argv) {
    int in_pause = argc > 1 && argv[1][0] == 'p';
    struct sigaction action = {0};
    action.sa_handler = on_usr1;
    sigaction(SIGUSR1, &action, NULL);
    write(1, "ready\n", 6);
    struct timespec nap = {0, 1000000};
    for (long naps = 0; !got && naps < 60000; naps++) {
        if (in_pause)
            pause();
        else
            nanosleep(&nap, NULL);
        for (volatile long step = 0; step < SPIN_STEPS; step++)
            continue;
    }
    printf(got ? "got SIGUSR1\n" : "timed out\n");
    return 0;
}
