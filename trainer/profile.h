// profile.h — the built-in profiler behind `--profile`: per op and phase (forward, backward,
// optimizer), calls, wall time, share of the step, GFLOP/s and GB/s, and the heap allocations
// made per step. Off by default: then every hook is one branch. Single-threaded use only (the
// hooks sit around kernel calls, outside parallel regions).
//
// In a training loop:
//     if (profile) prof_enable(1);
//     for each step: prof_step_begin(); ... forward, backward, optimizer ... prof_step_end();
//     prof_print(stdout, 0);            // or prof_print(log, 1) for one JSON line
// Kernel call sites (gpt2.c):
//     double t = prof_start();  matmul_forward(...);  prof_stop("matmul.qkv", PROF_FWD, t, flops, bytes);
#pragma once
#include <stdio.h>

typedef enum { PROF_FWD, PROF_BWD, PROF_OPT, PROF_N_PHASES } prof_phase;

void prof_enable(int on);
int prof_enabled(void);
// Zeroes every figure (e.g. after warm-up, or after printing every N steps).
void prof_reset(void);

// A timestamp when enabled, else 0 (and prof_stop ignores the call).
double prof_start(void);
// Records one call of op (a string with static storage; ops are told apart by name and phase)
// that started at t0, with its floating-point operations and the bytes it must move.
void prof_stop(const char *op, prof_phase phase, double t0, double flops, double bytes);

// Brackets of one training step: the step's wall time (the denominator of "% of step") and its
// heap allocations. Tokens per step (for the per-token heap figure) is optional: 0 = unknown.
void prof_step_begin(void);
void prof_step_end(long tokens);

// The table (json = 0) or one JSON object on one line (json = 1), over the steps recorded since
// the last reset. When more than one step was recorded the first is left out as warm-up (page
// faults, first-touch), and the table says so.
void prof_print(FILE *f, int json);
