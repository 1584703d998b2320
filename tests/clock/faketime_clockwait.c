/* Timed semaphore waits for the suite under libfaketime (`make test-clock-ahead`).
 *
 * libfaketime 0.9.10 moves CLOCK_MONOTONIC but does not intercept sem_clockwait(), which
 * CPython 3.11 uses for every timed lock wait (threading.Event.wait, Condition.wait_for,
 * queue.get with a timeout). The absolute deadline CPython computes from the moved clock is
 * then days ahead of the kernel's, and a "3 s" wait lasts until something else wakes it.
 * Loaded after libfaketime, this turns the deadline back into the kernel's clock: the time
 * left by the moved clock, added to the real one (read by system call, past libfaketime).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <semaphore.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef int (*clockwait_fn)(sem_t *, clockid_t, const struct timespec *);

static long long nanoseconds(const struct timespec *t) {
    return (long long)t->tv_sec * 1000000000LL + t->tv_nsec;
}

int sem_clockwait(sem_t *sem, clockid_t clock, const struct timespec *deadline) {
    static clockwait_fn next;
    if (!next) {
        next = (clockwait_fn)dlsym(RTLD_NEXT, "sem_clockwait");
    }
    struct timespec moved, real;
    if (clock_gettime(clock, &moved) != 0 || syscall(SYS_clock_gettime, clock, &real) != 0) {
        return next(sem, clock, deadline);
    }
    long long left = nanoseconds(deadline) - nanoseconds(&moved);
    if (left < 0) {
        left = 0;
    }
    long long at = nanoseconds(&real) + left;
    struct timespec kernel_deadline = {at / 1000000000LL, at % 1000000000LL};
    return next(sem, clock, &kernel_deadline);
}
