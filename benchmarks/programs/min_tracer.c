/* The absolute floor: a minimal single-process ptrace loop.
 * Runs argv[1..] under PTRACE_SYSCALL, resuming at every stop, and prints the
 * number of syscall stops (entry + exit) on stderr as "stops N". Exits with the
 * tracee's status. */
#include <signal.h>
#include <stdio.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: min_tracer PROG [ARGS...]\n");
        return 2;
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 2;
    }
    if (pid == 0) {
        ptrace(PTRACE_TRACEME, 0, 0, 0);
        execv(argv[1], argv + 1);
        perror("execv");
        _exit(127);
    }
    int status;
    long stops = 0;
    int deliver = 0;
    if (waitpid(pid, &status, __WALL) < 0 || !WIFSTOPPED(status)) {
        fprintf(stderr, "min_tracer: no exec stop\n");
        return 2;
    }
    ptrace(PTRACE_SETOPTIONS, pid, 0, PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL);
    for (;;) {
        ptrace(PTRACE_SYSCALL, pid, 0, deliver);
        if (waitpid(pid, &status, __WALL) < 0) {
            perror("waitpid");
            return 2;
        }
        if (WIFEXITED(status) || WIFSIGNALED(status))
            break;
        deliver = 0;
        if (WSTOPSIG(status) == (SIGTRAP | 0x80))
            stops++;
        else
            deliver = WSTOPSIG(status);
    }
    fprintf(stderr, "stops %ld\n", stops);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
