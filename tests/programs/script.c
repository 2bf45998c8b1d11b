/* An interpreter of a script of system calls, compiled into the program.
 *
 * usage: script DIR [timer]
 * The script is compiled in: either the macro SCRIPT (-DSCRIPT='"S:6869;E3"'), or,
 * without it, the text written into a copy of the binary after the marker
 * "#SCRIPT#" of `script_area` (NUL-terminated; the tests do this, so one build
 * serves every script). Steps are separated by ';', each one letter and its
 * arguments. Files are DIR/f0 .. DIR/f7, one fd slot each.
 *
 *   O<n>         open DIR/f<n> (O_RDWR|O_CREAT|O_APPEND, 0644) into slot n
 *   W<n>:<hex>   write the bytes to slot n          (write)
 *   S:<hex>      write the bytes to stdout          (write)
 *   R<n>         pread up to 64 bytes of slot n at offset 0 (pread64), then
 *                write them to stdout                (write)
 *   C<n>         close slot n                       (close)
 *   P            getpid                             (getpid)
 *   N<us>        sleep that many microseconds       (nanosleep)
 *   K<sig>       kill(own pid, sig)                 (kill); the handler of
 *                SIGUSR1/SIGUSR2 writes "[<sig>]" to stdout (write)
 *   L<n>         spin n * SPIN_STEPS steps (default 100,000), no syscall; builds
 *                with different -DSPIN_STEPS are variants that run at different speeds
 *   X            crash: store through a NULL pointer (SIGSEGV)
 *   E<n>         exit with status n                 (exit_group)
 *   J<n>         jump back to the first step, n times in all (long runs from a
 *                short script; the property tests do not use it)
 *
 * The end of the script exits with status 0. With "timer", a POSIX timer sends
 * SIGALRM at 1 kHz throughout; its handler writes a byte to /dev/null. The
 * prologue (getpid, sigaction, /dev/null, the timer) is the same for every script. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MARKER "#SCRIPT#"
#ifdef SCRIPT
char script_area[] = MARKER SCRIPT;
#else
char script_area[16384] = MARKER;
#endif

#define SLOTS 8
#ifndef SPIN_STEPS
#define SPIN_STEPS 100000L
#endif

static int devnull = -1;
static volatile unsigned long ticks;

static void on_user_signal(int signum) {
    char text[8];
    int n = snprintf(text, sizeof text, "[%d]", signum);
    write(1, text, n);
}

static void on_tick(int signum) {
    (void)signum;
    ticks++;
    write(devnull, "t", 1);
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes the hex after ':' up to the step's end; returns the byte count. */
static size_t decode_hex(const char *text, const char *end, unsigned char *out, size_t room) {
    size_t n = 0;
    while (text + 1 < end && n < room) {
        int high = hex_value(text[0]), low = hex_value(text[1]);
        if (high < 0 || low < 0) break;
        out[n++] = (unsigned char)(high << 4 | low);
        text += 2;
    }
    return n;
}

static void install(int signum, void (*handler)(int)) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = handler;
    action.sa_flags = SA_RESTART;
    sigaction(signum, &action, NULL);
}

static void start_timer(void) {
    devnull = open("/dev/null", O_WRONLY);
    install(SIGALRM, on_tick);
    timer_t timer;
    struct sigevent event;
    memset(&event, 0, sizeof event);
    event.sigev_notify = SIGEV_SIGNAL;
    event.sigev_signo = SIGALRM;
    timer_create(CLOCK_MONOTONIC, &event, &timer);
    struct itimerspec period = {{0, 1000000}, {0, 1000000}};
    timer_settime(timer, 0, &period, NULL);
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : ".";
    int timer = argc > 2 && strcmp(argv[2], "timer") == 0;
    int fds[SLOTS];
    for (int i = 0; i < SLOTS; i++) fds[i] = -1;
    pid_t self = getpid();
    install(SIGUSR1, on_user_signal);
    install(SIGUSR2, on_user_signal);
    if (timer) start_timer();

    unsigned char buffer[256];
    char path[4096];
    volatile unsigned long spin = 0;
    const char *start = script_area + sizeof MARKER - 1, *step = start;
    long jumps = 0;
    while (*step) {
        const char *end = strchr(step, ';');
        if (!end) end = step + strlen(step);
        long number = strtol(step + 1, NULL, 10);
        int slot = (int)(number >= 0 && number < SLOTS ? number : 0);
        const char *colon = memchr(step, ':', (size_t)(end - step));
        size_t length = colon ? decode_hex(colon + 1, end, buffer, sizeof buffer) : 0;
        switch (*step) {
        case 'O':
            snprintf(path, sizeof path, "%s/f%d", dir, slot);
            fds[slot] = open(path, O_RDWR | O_CREAT | O_APPEND, 0644);
            break;
        case 'W':
            write(fds[slot], buffer, length);
            break;
        case 'S':
            write(1, buffer, length);
            break;
        case 'R': {
            ssize_t got = pread(fds[slot], buffer, 64, 0);
            write(1, buffer, got > 0 ? (size_t)got : 0);
            break;
        }
        case 'C':
            close(fds[slot]);
            fds[slot] = -1;
            break;
        case 'P':
            getpid();
            break;
        case 'N': {
            struct timespec nap = {number / 1000000, (number % 1000000) * 1000};
            syscall(SYS_nanosleep, &nap, NULL);
            break;
        }
        case 'K':
            kill(self, (int)number);
            break;
        case 'L':
            for (long i = 0; i < number * SPIN_STEPS; i++) spin += (unsigned long)i ^ spin;
            break;
        case 'X':
            *(volatile int *)0 = 1;
            break;
        case 'E':
            _exit((int)number);
        case 'J':
            if (jumps < number) {
                jumps++;
                step = start;
                continue;
            }
            break;
        }
        step = *end ? end + 1 : end;
    }
    _exit(0);
}
