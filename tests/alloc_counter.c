// alloc_counter.c — LD_PRELOAD library that counts every malloc/calloc/realloc/
// posix_memalign/aligned_alloc/memalign/valloc of the whole process (smallmind, libc, libgomp,
// Open MPI). smallmind calls sm_step_mark(step) (a weak symbol, bound only when this library
// is preloaded) with +k at the start of training step k and -k when its training work
// (forward, backward, sync, optimizer) is done, before any evaluation or checkpoint; at exit
// the counts between marks go to $ALLOC_COUNTER_OUT as "step K allocs" (the step itself) and
// "after K allocs" (evaluation/checkpoint after it, which may allocate) lines.
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

#define MAX_MARKS 100000
static atomic_ulong g_count;
static unsigned long g_at_mark[MAX_MARKS];
static int g_mark_step[MAX_MARKS];
static int g_n_marks;

void *malloc(size_t n) { atomic_fetch_add(&g_count, 1); return __libc_malloc(n); }
void *calloc(size_t n, size_t s) { atomic_fetch_add(&g_count, 1); return __libc_calloc(n, s); }
void *realloc(void *p, size_t n) { atomic_fetch_add(&g_count, 1); return __libc_realloc(p, n); }
void *memalign(size_t a, size_t n) { atomic_fetch_add(&g_count, 1); return __libc_memalign(a, n); }
void *aligned_alloc(size_t a, size_t n) { atomic_fetch_add(&g_count, 1); return __libc_memalign(a, n); }
void *valloc(size_t n) { atomic_fetch_add(&g_count, 1); return __libc_memalign(4096, n); }
int posix_memalign(void **out, size_t a, size_t n) {
    atomic_fetch_add(&g_count, 1);
    void *p = __libc_memalign(a, n);
    if (!p) return 12;   // ENOMEM
    *out = p;
    return 0;
}

void sm_step_mark(int step) {
    if (g_n_marks < MAX_MARKS) {
        g_at_mark[g_n_marks] = atomic_load(&g_count);
        g_mark_step[g_n_marks++] = step;
    }
}

__attribute__((destructor)) static void report(void) {
    const char *path = getenv("ALLOC_COUNTER_OUT");
    // only the process that trained reports: helpers the run spawns (Open MPI's singleton
    // daemon) inherit LD_PRELOAD too, and must not overwrite the file
    if (!path || g_n_marks == 0) return;
    FILE *f = fopen(path, "w");
    if (!f) return;
    for (int i = 0; i + 1 < g_n_marks; i++)
        fprintf(f, "%s %d %lu\n", g_mark_step[i] > 0 ? "step" : "after", abs(g_mark_step[i]),
                g_at_mark[i + 1] - g_at_mark[i]);
    fprintf(f, "total %lu\n", atomic_load(&g_count));
    fclose(f);
}
