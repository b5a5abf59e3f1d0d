// bench_cli.c — a stand-alone `smallmind bench` (cmd_bench) for the bench smoke test, so the test
// does not depend on how the smallmind binary dispatches its subcommands.
int cmd_bench(int argc, char **argv);

int main(int argc, char **argv) { return cmd_bench(argc, argv); }
