/* Processes and threads, each checked against what it must see, printing one line each:
 * - fork: the child sends its getpid() and getppid() through a pipe; the parent checks
 *   them against fork's result and its own getpid(), then reaps it (status 7);
 * - kill: a child that pauses is killed with SIGTERM by the PID fork gave; waitpid
 *   must report that PID and that signal;
 * - group: setpgid(child, child) in the parent, getpgid(child) must be the child;
 * - spawn: posix_spawn (clone3 or vfork) of `argv[1]` with "spawned", reaped;
 * - thread: two threads sum halves of a range; gettid() differs from getpid() in them.
 * PIDs are printed only as comparisons: they differ between runs. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static void *half(void *arg) {
    long start = (long)arg, sum = 0;
    for (long i = start; i < start + 500000; i++) sum += i % 7;
    if (gettid() == getpid()) sum = -1;
    return (void *)sum;
}

int main(int argc, char **argv) {
    int fds[2];
    if (argc < 2 || pipe(fds) != 0) return 2;
    pid_t parent = getpid();
    pid_t child = fork();
    if (child == 0) {
        pid_t ids[2] = {getpid(), getppid()};
        write(fds[1], ids, sizeof ids);
        _exit(7);
    }
    pid_t seen[2];
    read(fds[0], seen, sizeof seen);
    int status;
    pid_t reaped = waitpid(child, &status, 0);
    printf("fork: child pid %s, parent pid %s, reaped %s, status %d\n",
           seen[0] == child ? "agrees" : "differs", seen[1] == parent ? "agrees" : "differs",
           reaped == child ? "it" : "another", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    fflush(stdout);

    pid_t sleeper = fork();
    if (sleeper == 0) {
        pause();
        _exit(0);
    }
    setpgid(sleeper, sleeper);
    printf("group: %s\n", getpgid(sleeper) == sleeper ? "the child leads its group" : "elsewhere");
    fflush(stdout);
    kill(sleeper, SIGTERM);
    reaped = waitpid(sleeper, &status, 0);
    printf("kill: reaped %s, %s\n", reaped == sleeper ? "it" : "another",
           WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM ? "killed by SIGTERM" : "not killed");
    fflush(stdout);

    pid_t spawned;
    char *spawn_argv[] = {argv[1], "spawned", NULL};
    if (posix_spawn(&spawned, argv[1], NULL, NULL, spawn_argv, environ) != 0) return 3;
    waitpid(spawned, &status, 0);
    printf("spawn: status %d\n", WEXITSTATUS(status));
    fflush(stdout);

    pthread_t threads[2];
    for (long i = 0; i < 2; i++) pthread_create(&threads[i], NULL, half, (void *)(i * 500000));
    long total = 0;
    for (int i = 0; i < 2; i++) {
        void *sum;
        pthread_join(threads[i], &sum);
        total += (long)sum;
    }
    printf("thread: sum %ld\n", total);
    return 0;
}
