/* Prints "before", then creates a process or a thread in the way argv[1] names:
 * fork, vfork, thread (pthread_create), spawn (posix_spawn of /bin/true) or
 * system ("true"). Whatever is created writes "ran\n" to the file argv[2]; the
 * parent then prints "after". Under the monitor nothing after "before" may happen. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;
static const char *witness;

static void mark(void) {
    int fd = open(witness, O_WRONLY | O_CREAT | O_APPEND, 0644);
    write(fd, "ran\n", 4);
    close(fd);
}

static void *thread_main(void *unused) {
    (void)unused;
    mark();
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const char *how = argv[1];
    witness = argv[2];
    write(1, "before\n", 7);
    if (strcmp(how, "fork") == 0 || strcmp(how, "vfork") == 0) {
        pid_t pid = strcmp(how, "fork") == 0 ? fork() : vfork();
        if (pid == 0) {
            mark();
            _exit(0);
        }
        waitpid(pid, NULL, 0);
    } else if (strcmp(how, "thread") == 0) {
        pthread_t thread;
        pthread_create(&thread, NULL, thread_main, NULL);
        pthread_join(thread, NULL);
    } else if (strcmp(how, "spawn") == 0) {
        char *child_argv[] = {"sh", "-c", "echo ran >> \"$0\"", (char *)witness, NULL};
        pid_t pid;
        posix_spawn(&pid, "/bin/sh", NULL, NULL, child_argv, environ);
        waitpid(pid, NULL, 0);
    } else if (strcmp(how, "system") == 0) {
        char command[4200];
        strcpy(command, "echo ran >> ");
        strncat(command, witness, 4096);
        system(command);
    } else {
        return 2;
    }
    write(1, "after\n", 6);
    return 0;
}
