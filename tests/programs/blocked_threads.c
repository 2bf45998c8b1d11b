/* Threads blocked in different calls until a signal sent to the process ends it: the main
 * thread in accept (a socket listening on 127.0.0.1, on a port of the kernel's choice), one
 * thread in read on a pipe nobody writes, one in nanosleep, one in a futex
 * (pthread_cond_wait that nothing signals). Prints "ready" once every thread runs. It has
 * no handler: SIGTERM, SIGINT ... end it by their default action, and the kernel tears
 * its threads down one by one, each wherever it is. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int pipe_fds[2];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t never = PTHREAD_COND_INITIALIZER;
static pthread_barrier_t started;

static void *reader(void *unused) {
    char byte;
    pthread_barrier_wait(&started);
    read(pipe_fds[0], &byte, 1);
    return unused;
}

static void *sleeper(void *unused) {
    struct timespec nap = {60, 0};
    pthread_barrier_wait(&started);
    for (;;) nanosleep(&nap, NULL);
    return unused;
}

static void *waiter(void *unused) {
    pthread_barrier_wait(&started);
    pthread_mutex_lock(&lock);
    for (;;) pthread_cond_wait(&never, &lock);
    return unused;
}

int main(void) {
    void *(*bodies[])(void *) = {reader, sleeper, waiter};
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int server = socket(AF_INET, SOCK_STREAM, 0);
    if (server < 0 || bind(server, (struct sockaddr *)&address, sizeof address) || listen(server, 1)
            || pipe(pipe_fds)) {
        perror("set-up");
        return 1;
    }
    pthread_barrier_init(&started, NULL, 4);
    for (int i = 0; i < 3; i++) {
        pthread_t thread;
        pthread_create(&thread, NULL, bodies[i], NULL);
    }
    pthread_barrier_wait(&started);
    write(1, "ready\n", 6);
    accept(server, NULL, NULL);
    return 0;
}
