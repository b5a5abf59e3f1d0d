// cpu.c — defines the CPU dispatch of kernels/: the features this CPU and OS offer (cpuid and
// xgetbv, read once), the mask of features kernels may use (kernels_cpu_allow), the named
// feature levels tests and the bench choose from, and for every optimised op the paths it has,
// in order of preference (kernels_pick): the one place that decides which code runs.
#include "kernels_internal.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#ifdef KERNELS_X86
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#endif

// ---------------------------------------------------------------------------------------------
// Detection

static const char *const FEATURE_NAMES[KERNELS_CPU_N_FEATURES] = {
    "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8",
};

#ifdef KERNELS_X86
static unsigned long long read_xcr0(void) {   // xgetbv(0): the register states the OS saves and restores
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

// Linux keeps AMX's tile data off until a process asks for it (arch_prctl ARCH_REQ_XCOMP_PERM,
// since 5.16); the instructions fault otherwise. Asked only on CPUs that have AMX.
static int amx_permitted(void) {
#if defined(__linux__) && defined(SYS_arch_prctl)
    enum { ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 };
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
#else
    return 0;
#endif
}

static unsigned detect_x86(void) {
    unsigned a, b, c, d, f = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    if (!osxsave || !avx) return 0;   // no AVX, or an OS that does not save its registers
    unsigned long long xcr0 = read_xcr0();
    int os_avx = (xcr0 & 0x6) == 0x6;             // XMM and YMM state
    int os_avx512 = os_avx && (xcr0 & 0xE0) == 0xE0;   // opmask, ZMM_Hi256, Hi16_ZMM
    int os_amx = (xcr0 & 0x60000) == 0x60000;          // XTILECFG, XTILEDATA
    if (!os_avx) return 0;
    unsigned max_leaf = __get_cpuid_max(0, NULL);
    unsigned b7 = 0, c7 = 0, d7 = 0, a71 = 0;
    if (max_leaf >= 7) {
        __cpuid_count(7, 0, a, b7, c7, d7);
        __cpuid_count(7, 1, a71, b, c, d);
    }
    if (fma) f |= KERNELS_CPU_FMA;
    if ((b7 >> 5) & 1) f |= KERNELS_CPU_AVX2;
    if ((a71 >> 4) & 1) f |= KERNELS_CPU_AVX_VNNI;
    if (os_avx512) {
        if ((b7 >> 16) & 1) f |= KERNELS_CPU_AVX512F;
        if ((b7 >> 30) & 1) f |= KERNELS_CPU_AVX512BW;
        if ((b7 >> 31) & 1) f |= KERNELS_CPU_AVX512VL;
        if ((c7 >> 11) & 1) f |= KERNELS_CPU_AVX512_VNNI;
        if ((a71 >> 5) & 1) f |= KERNELS_CPU_AVX512_BF16;
    }
    int amx_tile = (d7 >> 24) & 1;
    if (os_amx && amx_tile && (((d7 >> 22) & 1) || ((d7 >> 25) & 1)) && amx_permitted()) {
        if ((d7 >> 22) & 1) f |= KERNELS_CPU_AMX_BF16;
        if ((d7 >> 25) & 1) f |= KERNELS_CPU_AMX_INT8;
    }
    return f;
}
#endif

static atomic_uint g_detected = 0, g_detected_done = 0;   // the CPU's features, read once
static atomic_uint g_allowed = KERNELS_CPU_ALL;          // what kernels may use

unsigned kernels_cpu_detect(void) {
    if (atomic_load_explicit(&g_detected_done, memory_order_acquire)) return atomic_load_explicit(&g_detected, memory_order_relaxed);
    unsigned f = 0;
#ifdef KERNELS_X86
    f = detect_x86();
#endif
    atomic_store_explicit(&g_detected, f, memory_order_relaxed);   // racing first callers store the same value
    atomic_store_explicit(&g_detected_done, 1, memory_order_release);
    return f;
}

unsigned kernels_cpu_features(void) {
    return kernels_cpu_detect() & atomic_load_explicit(&g_allowed, memory_order_relaxed);
}

unsigned kernels_cpu_allow(unsigned mask) {
    atomic_store(&g_allowed, mask & KERNELS_CPU_ALL);
    return kernels_cpu_features();
}

const char *kernels_cpu_feature_name(unsigned feature) {
    for (int i = 0; i < KERNELS_CPU_N_FEATURES; i++)
        if (feature == 1u << i) return FEATURE_NAMES[i];
    return "?";
}

int kernels_cpu_describe(char *buf, size_t size, unsigned mask) {
    size_t len = 0;
    if (size) buf[0] = '\0';
    for (int i = 0; i < KERNELS_CPU_N_FEATURES; i++) {
        if (!(mask & (1u << i))) continue;
        int n = snprintf(buf + len, len < size ? size - len : 0, "%s%s", len ? " " : "", FEATURE_NAMES[i]);
        if (n < 0) return -1;
        len += (size_t)n;
    }
    if (!len) {
        int n = snprintf(buf, size, "none");
        len = n < 0 ? 0 : (size_t)n;
    }
    return len < size ? (int)len : -1;
}

// ---------------------------------------------------------------------------------------------
// Levels: named feature sets, from plain C to everything the CPU has

#define F_AVX2 (KERNELS_CPU_AVX2 | KERNELS_CPU_FMA)
#define F_AVX512 (F_AVX2 | KERNELS_CPU_AVX512F | KERNELS_CPU_AVX512BW | KERNELS_CPU_AVX512VL)

static const kernels_cpu_level LEVELS[] = {
    {"scalar", 0},
    {"avx2", F_AVX2},
    {"avx-vnni", F_AVX2 | KERNELS_CPU_AVX_VNNI},
    {"avx512", F_AVX512},
    {"avx512-vnni", F_AVX512 | KERNELS_CPU_AVX512_VNNI},
    {"avx512-bf16", F_AVX512 | KERNELS_CPU_AVX512_VNNI | KERNELS_CPU_AVX512_BF16},
    {"native", KERNELS_CPU_ALL},
};

int kernels_cpu_levels(const kernels_cpu_level **levels) {
    *levels = LEVELS;
    return (int)(sizeof LEVELS / sizeof LEVELS[0]);
}

const kernels_cpu_level *kernels_cpu_level_find(const char *name) {
    for (size_t i = 0; i < sizeof LEVELS / sizeof LEVELS[0]; i++)
        if (!strcmp(LEVELS[i].name, name)) return &LEVELS[i];
    return NULL;
}

// ---------------------------------------------------------------------------------------------
// Paths: what each instruction-set path needs, and which paths each op has

static const struct {
    const char *name;
    unsigned needs;
} ISA[KERNELS_ISA_COUNT] = {
    [KERNELS_ISA_C] = {"c", 0},
    [KERNELS_ISA_AVX2] = {"avx2", F_AVX2},
    [KERNELS_ISA_AVX_VNNI] = {"avx-vnni", F_AVX2 | KERNELS_CPU_AVX_VNNI},
    [KERNELS_ISA_AVX512] = {"avx512", KERNELS_CPU_AVX512F | F_AVX2},
    [KERNELS_ISA_AVX512_VNNI] = {"avx512-vnni", F_AVX512 | KERNELS_CPU_AVX512_VNNI},
    [KERNELS_ISA_AVX512_BF16] = {"avx512-bf16", F_AVX512 | KERNELS_CPU_AVX512_BF16},
};

// Each op's paths, best first; every list ends with KERNELS_ISA_C (plain C, always there).
#define PATHS(...) {__VA_ARGS__, KERNELS_ISA_C}
static const kernels_isa OP_PATHS[KERNELS_OP_COUNT][KERNELS_ISA_COUNT] = {
    [KERNELS_OP_GEMM_F32] = PATHS(KERNELS_ISA_AVX512, KERNELS_ISA_AVX2),
    [KERNELS_OP_GEMM_Q8] = PATHS(KERNELS_ISA_AVX512_VNNI, KERNELS_ISA_AVX_VNNI, KERNELS_ISA_AVX2),
    [KERNELS_OP_ATTENTION] = PATHS(KERNELS_ISA_AVX512),
    [KERNELS_OP_GELU] = PATHS(KERNELS_ISA_AVX512),
    [KERNELS_OP_LAYERNORM] = PATHS(KERNELS_ISA_AVX512),
    [KERNELS_OP_SOFTMAX_XENT] = PATHS(KERNELS_ISA_AVX512),
    [KERNELS_OP_GEMM_BF16] = PATHS(KERNELS_ISA_AVX512_BF16),
};
#undef PATHS

static const char *const OP_NAMES[KERNELS_OP_COUNT] = {
    [KERNELS_OP_GEMM_F32] = "gemm f32", [KERNELS_OP_GEMM_Q8] = "gemm q8", [KERNELS_OP_ATTENTION] = "attention",
    [KERNELS_OP_GELU] = "gelu", [KERNELS_OP_LAYERNORM] = "layernorm bwd", [KERNELS_OP_SOFTMAX_XENT] = "softmax_xent",
    [KERNELS_OP_GEMM_BF16] = "gemm bf16",
};

kernels_isa kernels_pick(kernels_op op) {
    unsigned have = kernels_cpu_features();
    const kernels_isa *p = OP_PATHS[op];
    for (int i = 0; i < KERNELS_ISA_COUNT; i++) {
        if ((ISA[p[i]].needs & ~have) == 0) return p[i];
        if (p[i] == KERNELS_ISA_C) break;
    }
    return KERNELS_ISA_C;
}

const char *kernels_isa_name(kernels_isa isa) { return isa >= 0 && isa < KERNELS_ISA_COUNT ? ISA[isa].name : "?"; }

const char *kernels_path(kernels_op op) { return op >= 0 && op < KERNELS_OP_COUNT ? ISA[kernels_pick(op)].name : "?"; }

const char *kernels_op_name(kernels_op op) { return op >= 0 && op < KERNELS_OP_COUNT ? OP_NAMES[op] : "?"; }
