/* Prints "before"; the CRASH build then dies of SIGSEGV where the others print "after". */
#include <unistd.h>

int main(void) {
    write(1, "before\n", 7);
#ifdef CRASH
    *(volatile int *)0 = 1;
#endif
    write(1, "after\n", 6);
    return 0;
}
