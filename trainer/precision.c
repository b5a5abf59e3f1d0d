// precision.c — defines the --precision flag's parsing (cli_precision) shared by train, eval and
// generate, and the names of the precisions.
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "trainer.h"

const char *precision_name(sm_dtype p) { return p == SM_BF16 ? "bf16" : "fp32"; }

sm_dtype cli_precision(const char *value) {
    if (!strcmp(value, "fp32")) return SM_F32;
    if (strcmp(value, "bf16") != 0) {
        char b[1024];   // sm_shown: control characters escaped, so the refusal stays one line (fuzz_cli)
        sm_fatal(SM_EXIT_USAGE, "--precision expects fp32 or bf16, got '%s' (command line)", sm_shown(value, 200, b, sizeof b));
    }
    const char *no = getenv("SMALLMIND_TEST_NO_BF16");   // tests: this CPU seen without AVX512-BF16
    if (no && *no && strcmp(no, "0") != 0) kernels_cpu_allow(KERNELS_CPU_ALL & ~(unsigned)KERNELS_CPU_AVX512_BF16);
    if (!kernels_bf16_available())
        sm_fatal(SM_EXIT_USAGE, "--precision bf16 needs AVX512-BF16 (vdpbf16ps), which this CPU does not have: use "
                 "--precision fp32 (command line)");
    return SM_BF16;
}
