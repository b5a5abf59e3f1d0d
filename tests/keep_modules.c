// keep_modules.c — linked into every binary of the sanitizer build (-DSMALLMIND_SANITIZE=ON) only: a
// dlclose() that keeps the library mapped. LeakSanitizer looks for leaks at exit, after MPI_Finalize
// has dlclose()d Open MPI's components (mca_*.so); with them unmapped it can neither name the module a
// leaked block came from ("<unknown module>", so no suppression can match it) nor see the pointers
// their globals still hold (so thousands of blocks they keep read as leaked). Kept mapped, Open MPI's
// own leaks are few and named, and tests/lsan_openmpi.supp suppresses them by library and function.
// The executable's definition takes precedence over libc's for every library the process loads
// (exported with --export-dynamic-symbol=dlclose).
int dlclose(void *handle) {
    (void)handle;
    return 0;
}
