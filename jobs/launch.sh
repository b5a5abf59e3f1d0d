#!/usr/bin/env bash
# launch.sh — runs smallmind under mpirun on a workstation or a list of hosts without Slurm, with
# the ranks, threads and binding said once; prints the mpirun command before running it.
#
#   jobs/launch.sh -n 2 -- train --data data/book --run-dir runs/book --steps 1000
#   jobs/launch.sh -n 4 -t 8 --bind cores --hostfile hosts -x LD_LIBRARY_PATH -- train ...
#   jobs/launch.sh --dry-run -n 2 -- train ...          (print the command only)
#
# options (before --; everything after it goes to smallmind):
#   -n, --ranks N       MPI ranks (default: the slots of --hostfile, else 1)
#   -t, --threads T     OpenMP threads per rank (default: this machine's CPUs / ranks per host)
#   --bind none|cores   none (default): --bind-to none, each rank may use every CPU of its host;
#                       cores: --map-by slot:PE=T --bind-to core, OMP_PLACES=cores and
#                       OMP_PROC_BIND=close, each rank pinned to T cores of its own
#   --hostfile FILE     Open MPI hostfile ("host slots=N" per line); the binary, the data and the
#                       run directory must be at the same paths on every host (a shared filesystem)
#   -x VAR[=VALUE]      an environment variable for every rank (repeatable); OMP_NUM_THREADS and,
#                       with --bind cores, OMP_PLACES and OMP_PROC_BIND are always passed
#   --mca KEY VALUE     an Open MPI parameter (repeatable), e.g. --mca btl_tcp_if_include eth0
#   --dry-run           print the command, run nothing
# The binary is $SMALLMIND if set, else `smallmind` on PATH. As root, set
# OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 (Open MPI refuses root otherwise).
# Exit status: smallmind's (mpirun passes on the first non-zero one: 75 = stopped by a signal
# after a checkpoint, resume with the same command), 2 for bad options here.
set -euo pipefail

die() { echo "launch.sh: error: $*" >&2; exit 2; }
ranks="" threads="" bind=none hostfile="" dry=0
envs=() mcas=()
while [ $# -gt 0 ]; do
  case "$1" in
    -n|--ranks) [ $# -ge 2 ] || die "$1 needs a value"; ranks=$2; shift 2 ;;
    -t|--threads) [ $# -ge 2 ] || die "$1 needs a value"; threads=$2; shift 2 ;;
    --bind) [ $# -ge 2 ] || die "$1 needs a value"; bind=$2; shift 2 ;;
    --hostfile) [ $# -ge 2 ] || die "$1 needs a value"; hostfile=$2; shift 2 ;;
    -x) [ $# -ge 2 ] || die "-x needs a variable"; envs+=("$2"); shift 2 ;;
    --mca) [ $# -ge 3 ] || die "--mca needs a key and a value"; mcas+=(--mca "$2" "$3"); shift 3 ;;
    --dry-run) dry=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --) shift; break ;;
    *) die "unknown option '$1' (smallmind's arguments go after --; see jobs/launch.sh --help)" ;;
  esac
done
[ $# -gt 0 ] || die "no smallmind subcommand after -- (e.g. -- train --data D --run-dir R)"
is_count() { [[ $1 =~ ^[1-9][0-9]*$ ]]; }
case "$bind" in none|cores) ;; *) die "--bind expects none or cores, got '$bind'" ;; esac

hosts=1
if [ -n "$hostfile" ]; then
  [ -r "$hostfile" ] || die "cannot read the hostfile '$hostfile'"
  # hosts and slots: "name [slots=N]" per line, # comments
  read -r hosts slots < <(awk '{sub(/#.*/, "")} NF {n++; s += (match($0, /slots=[0-9]+/) ? substr($0, RSTART+6, RLENGTH-6) : 1)}
                              END {print n+0, s+0}' "$hostfile")
  [ "$hosts" -gt 0 ] || die "the hostfile '$hostfile' names no host"
  [ -n "$ranks" ] || ranks=$slots
  hostfile=$(readlink -f "$hostfile")
fi
ranks=${ranks:-1}
is_count "$ranks" || die "--ranks expects a positive integer, got '$ranks'"
per_host=$(( (ranks + hosts - 1) / hosts ))
if [ -z "$threads" ]; then
  threads=$(( $(nproc) / per_host ))
  [ "$threads" -ge 1 ] || threads=1
fi
is_count "$threads" || die "--threads expects a positive integer, got '$threads'"

bin=${SMALLMIND:-$(command -v smallmind || true)}
[ -n "$bin" ] && [ -x "$bin" ] || die "no smallmind binary: set SMALLMIND=/path/to/smallmind or put it on PATH"
bin=$(readlink -f "$bin")   # the same absolute path on every host

cmd=(mpirun -np "$ranks")
[ -n "$hostfile" ] && cmd+=(--hostfile "$hostfile")
export OMP_NUM_THREADS=$threads
if [ "$bind" = cores ]; then
  export OMP_PLACES=cores OMP_PROC_BIND=close
  cmd+=(--map-by "slot:PE=$threads" --bind-to core -x OMP_NUM_THREADS -x OMP_PLACES -x OMP_PROC_BIND)
else
  cmd+=(--bind-to none -x OMP_NUM_THREADS)
fi
for e in "${envs[@]+"${envs[@]}"}"; do cmd+=(-x "$e"); done
cmd+=("${mcas[@]+"${mcas[@]}"}" "$bin" "$@")

echo "launch.sh: $ranks rank(s) on $hosts host(s), $threads thread(s) per rank, binding $bind" >&2
printf 'launch.sh: OMP_NUM_THREADS=%s' "$threads" >&2
[ "$bind" = cores ] && printf ' OMP_PLACES=cores OMP_PROC_BIND=close' >&2
for w in "${cmd[@]}"; do   # quoted only where a shell needs it, so it can be pasted
  if [[ $w =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then printf ' %s' "$w" >&2; else printf " '%s'" "${w//\'/\'\\\'\'}" >&2; fi
done
echo >&2
[ "$dry" = 1 ] && exit 0
exec "${cmd[@]}"
