/* turns: threads take turns at one job, as sort's merge tree or a work queue does.
 *
 *   turns [LINES [THREADS]]
 *
 * Each thread takes the next line number under a mutex and writes that line while it
 * holds the mutex, then works a little outside it. The output is the same in every
 * run (lines in order, then "done"); which thread writes which line is not: natively it
 * differs from run to run, and under the monitor from variant to variant (a follower's
 * thread B writes the line the leader's thread A writes, while the follower's A sleeps
 * on the mutex). mvee.thread_pairing lets such threads change partners.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int next_line, lines;

static void *take_turns(void *unused) {
    char text[32];
    (void)unused;
    for (;;) {
        pthread_mutex_lock(&lock);
        if (next_line >= lines) {
            pthread_mutex_unlock(&lock);
            return NULL;
        }
        int length = snprintf(text, sizeof text, "line %d\n", next_line++);
        if (write(1, text, length) != length)
            exit(3);
        pthread_mutex_unlock(&lock);
        volatile unsigned work = 0;
        for (unsigned i = 0; i < 20000; i++)
            work += i;
    }
}

int main(int argc, char **argv) {
    lines = argc > 1 ? atoi(argv[1]) : 200;
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    pthread_t workers[16];
    if (threads < 1 || threads > 16)
        return 2;
    for (int i = 0; i < threads; i++)
        if (pthread_create(&workers[i], NULL, take_turns, NULL) != 0)
            return 1;
    for (int i = 0; i < threads; i++)
        pthread_join(workers[i], NULL);
    printf("done\n");
    return 0;
}
