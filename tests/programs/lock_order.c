/* lock_order: what each thread writes depends on the order in which the threads took the
 * locks; natively it differs from run to run. Under the monitor with the lock agent every
 * variant writes the leader's (docs/architecture.md, "Lock-order recording and replay").
 *
 *   counter  three threads take turns at a mutex-protected counter, each writes the value
 *            it saw (pthread_mutex_lock/trylock/unlock);
 *   queue    a producer and two consumers on a condition variable: which consumer got
 *            which item (pthread_cond_wait/timedwait/signal/broadcast);
 *   tokens   a semaphore shared with a forked child, in shared memory: which process got
 *            which token (sem_wait/trywait/post/getvalue).
 *
 * Every line is "<part> <who> <value>"; tests/test_lock_agent.py checks that they make a
 * possible run (every value once, each writer's in increasing order).
 */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 40
#define ITEMS 60
#define TOKENS 40

static void say(const char *part, long who, long value) {
    char line[64];
    int length = snprintf(line, sizeof line, "%s %ld %ld\n", part, who, value);
    if (write(1, line, length) != length)
        _exit(3);
}

static void spin(long n) {
    for (volatile long i = 0; i < n; i++)
        ;
}

/* --- counter --- */
static pthread_mutex_t counter_lock = PTHREAD_MUTEX_INITIALIZER;
static long counter;

static void *count(void *arg) {
    long who = (long)arg;
    for (int i = 0; i < ROUNDS; i++) {
        if (i % 3 == 0) {
            while (pthread_mutex_trylock(&counter_lock) == EBUSY)
                spin(100);
        } else {
            pthread_mutex_lock(&counter_lock);
        }
        long seen = counter++;
        pthread_mutex_unlock(&counter_lock);
        say("counter", who, seen);
        spin(2000 * (who + 1));
    }
    return NULL;
}

/* --- queue --- */
static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t queue_ready = PTHREAD_COND_INITIALIZER;
static long queue[ITEMS], queued, taken;

static void *consume(void *arg) {
    long who = (long)arg;
    for (;;) {
        pthread_mutex_lock(&queue_lock);
        while (taken == queued && queued < ITEMS) {
            struct timespec deadline;
            clock_gettime(CLOCK_REALTIME, &deadline);
            deadline.tv_nsec += 1000000;
            if (deadline.tv_nsec >= 1000000000) {
                deadline.tv_sec++;
                deadline.tv_nsec -= 1000000000;
            }
            if (who == 0)
                pthread_cond_wait(&queue_ready, &queue_lock);
            else
                pthread_cond_timedwait(&queue_ready, &queue_lock, &deadline);
        }
        if (taken == ITEMS) {
            pthread_mutex_unlock(&queue_lock);
            return NULL;
        }
        long item = queue[taken++];
        pthread_mutex_unlock(&queue_lock);
        say("queue", who, item);
        spin(3000);
    }
}

static void produce(void) {
    for (long i = 0; i < ITEMS; i++) {
        pthread_mutex_lock(&queue_lock);
        queue[queued++] = i;
        if (queued == ITEMS)
            pthread_cond_broadcast(&queue_ready);
        else
            pthread_cond_signal(&queue_ready);
        pthread_mutex_unlock(&queue_lock);
        spin(1500);
    }
}

/* --- tokens --- */
struct shared {
    sem_t lock;
    long next;
};

static void take_tokens(struct shared *shared, long who) {
    for (;;) {
        if (who == 0 ? sem_trywait(&shared->lock) != 0 : sem_wait(&shared->lock) != 0) {
            spin(100);
            continue;
        }
        long token = shared->next;
        if (token < TOKENS)
            shared->next++;
        int value;
        sem_getvalue(&shared->lock, &value);
        sem_post(&shared->lock);
        if (token >= TOKENS)
            return;
        say("tokens", who, token);
        spin(2500);
    }
}

int main(void) {
    pthread_t threads[3];
    for (long i = 0; i < 3; i++)
        pthread_create(&threads[i], NULL, count, (void *)i);
    for (int i = 0; i < 3; i++)
        pthread_join(threads[i], NULL);

    for (long i = 0; i < 2; i++)
        pthread_create(&threads[i], NULL, consume, (void *)i);
    produce();
    for (int i = 0; i < 2; i++)
        pthread_join(threads[i], NULL);

    struct shared *shared = mmap(NULL, sizeof *shared, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED || sem_init(&shared->lock, 1, 1) != 0)
        return 2;
    pid_t child = fork();
    if (child == 0) {
        take_tokens(shared, 1);
        _exit(0);
    }
    take_tokens(shared, 0);
    int status;
    waitpid(child, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 2;
}
