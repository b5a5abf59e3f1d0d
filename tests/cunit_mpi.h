// cunit_mpi.h — runs the registered CUnit suites on every rank of MPI_COMM_WORLD (rank 0 prints
// them) and returns the number of failures summed over the ranks; the registry is cleaned up.
#pragma once
#include <CUnit/Basic.h>
#include <mpi.h>

static inline int cunit_run_mpi(int rank) {
    if (rank == 0) {
        CU_basic_set_mode(CU_BRM_VERBOSE);
        CU_basic_run_tests();
    } else {
        CU_run_all_tests();
    }
    int failures = (int)CU_get_number_of_failures() + (int)CU_get_number_of_tests_failed(), total = 0;
    CU_cleanup_registry();
    MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    return total;
}
