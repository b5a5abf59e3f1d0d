// lsan_control.c — the sanitizer build's negative control for tests/lsan_openmpi.supp: a 2-rank MPI
// program that leaks one 64-byte block of its own between MPI_Init and MPI_Finalize. CTest passes it only
// when LeakSanitizer reports exactly that block on each rank (64 bytes in 1 allocation): Open MPI's own
// leaks suppressed, the program's not.
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *own_block(void) {   // the block the program loses: not Open MPI's
    char *p = malloc(64);
    if (!p) return NULL;
    strcpy(p, "leaked by the program, not by Open MPI");
    return p;
}

int main(int argc, char **argv) {
    if (MPI_Init(&argc, &argv) != MPI_SUCCESS) return 1;
    char *volatile p = own_block();
    if (!p) return 1;
    p = NULL;   // the only pointer to it, dropped
    double x = 1.0, sum = 0.0;   // one collective, so that the run passes through Open MPI's coll and btl
    if (MPI_Allreduce(&x, &sum, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS) return 1;
    MPI_Finalize();
    return 0;
}
