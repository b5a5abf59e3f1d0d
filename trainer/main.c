// main.c — the smallmind binary: dispatches to a subcommand.
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "trainer.h"

static const char USAGE[] =
    "usage: smallmind <command> [options]\n"
    "\n"
    "commands:\n"
    "  prepare   tokenize a text file into llm.c-format train/val shards\n"
    "  tokenize  text on stdin -> token ids on stdout, or ids -> text with --decode\n"
    "  train     train a GPT-2 (data-parallel under mpirun/srun)\n"
    "  eval      loss, perplexity and bits per byte of a checkpoint on a token shard\n"
    "  generate  text from a checkpoint (KV cache; greedy, temperature, top-k, top-p)\n"
    "  inspect   describe and verify a checkpoint (or a run directory's latest)\n"
    "  bench     kernels, train, generate, checkpoint, tokenizer or comm: figures against OpenBLAS, PyTorch, STREAM,\n"
    "            plain I/O, tiktoken, MPI in the same run\n"
    "  convert   llm.c GPT-2 checkpoints (.bin, fp32 or bf16) <-> HDF5 checkpoints\n"
    "\n"
    "Run 'smallmind <command> --help' for a command's options.\n";

int main(int argc, char **argv) {
    if (argc < 2) sm_fatal(SM_EXIT_USAGE, "no command given; see the usage with 'smallmind --help' (command line)");
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        fputs(USAGE, stdout);
        return SM_EXIT_OK;
    }
    if (!strcmp(cmd, "prepare")) return cmd_prepare(argc - 1, argv + 1);
    if (!strcmp(cmd, "tokenize")) return cmd_tokenize(argc - 1, argv + 1);
    if (!strcmp(cmd, "train")) return cmd_train(argc - 1, argv + 1);
    if (!strcmp(cmd, "inspect")) return cmd_inspect(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc - 1, argv + 1);
    if (!strcmp(cmd, "eval")) return cmd_eval(argc - 1, argv + 1);
    if (!strcmp(cmd, "generate")) return cmd_generate(argc - 1, argv + 1);
    if (!strcmp(cmd, "convert")) return cmd_convert(argc - 1, argv + 1);
    sm_fatal(SM_EXIT_USAGE, "unknown command '%s'; try 'smallmind --help' (argv[1])", cmd);
}
