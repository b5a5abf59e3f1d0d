#!/usr/bin/env bash
# netns_hosts.sh — two test "hosts" on this machine for multi-node runs over real TCP: network
# namespaces smnode0 and smnode1 joined by a veth pair (10.213.7.1 and 10.213.7.2/24, nothing
# routed outside them), each process started in one with a UTS namespace of its own (hostname
# smnode0 / smnode1), so Open MPI sees two nodes. The filesystem is the machine's: what a shared
# cluster filesystem looks like to smallmind. Root only.
#
#   netns_hosts.sh up                 create (idempotent)
#   netns_hosts.sh down               remove what `up` created (safe to repeat)
#   netns_hosts.sh on0 CMD...         run CMD on smnode0 (where mpirun runs)
#   netns_hosts.sh rsh HOST CMD...    Open MPI's launch agent (--mca plm_rsh_agent "THIS rsh"):
#                                     like `ssh HOST CMD`. With NETNS_PRIVATE_DIR=D set, smnode1
#                                     gets an empty tmpfs over D (a node that does not share D).
#   netns_hosts.sh hostfile FILE      writes an Open MPI hostfile, one slot per host
# mpirun from smnode0 needs: --mca plm_rsh_agent "THIS rsh" --mca btl tcp,self
#   --mca btl_tcp_if_include 10.213.7.0/24 --mca oob_tcp_if_include 10.213.7.0/24
set -euo pipefail
NS=(smnode0 smnode1)
IF=(smveth0 smveth1)
IP=(10.213.7.1 10.213.7.2)
SUBNET=10.213.7.0/24

ns_index() {   # smnode0 | 10.213.7.1 -> 0
  local i
  for i in 0 1; do
    if [ "$1" = "${NS[$i]}" ] || [ "$1" = "${IP[$i]}" ]; then echo "$i"; return 0; fi
  done
  echo "netns_hosts: unknown host '$1'" >&2
  return 1
}

up() {
  local i
  for i in 0 1; do
    ip netns list | grep -qw "${NS[$i]}" || ip netns add "${NS[$i]}"
    ip -n "${NS[$i]}" link set lo up   # Open MPI's PMIx server fails to start with lo down
    # `ip netns exec NS` bind-mounts /etc/netns/NS/hosts over /etc/hosts: names for both hosts
    mkdir -p "/etc/netns/${NS[$i]}"
    printf '127.0.0.1 localhost\n%s %s\n%s %s\n' "${IP[0]}" "${NS[0]}" "${IP[1]}" "${NS[1]}" \
      > "/etc/netns/${NS[$i]}/hosts"
  done
  if ! ip -n "${NS[0]}" link show "${IF[0]}" >/dev/null 2>&1; then
    ip link add "${IF[0]}" type veth peer name "${IF[1]}"
    ip link set "${IF[0]}" netns "${NS[0]}"
    ip link set "${IF[1]}" netns "${NS[1]}"
  fi
  for i in 0 1; do
    ip -n "${NS[$i]}" addr replace "${IP[$i]}/24" dev "${IF[$i]}"
    ip -n "${NS[$i]}" link set "${IF[$i]}" up
  done
  echo "netns_hosts: up: ${NS[0]}=${IP[0]} <-> ${NS[1]}=${IP[1]}"
}

down() {
  local i
  for i in 0 1; do
    if ip netns list 2>/dev/null | grep -qw "${NS[$i]}"; then ip netns del "${NS[$i]}"; fi   # takes its veth end along
    rm -rf "/etc/netns/${NS[$i]}"
  done
  rmdir /etc/netns 2>/dev/null || true
  echo "netns_hosts: down"
}

# CMD runs in host i's network namespace, in mount and UTS namespaces of its own
on() {
  local i=$1; shift
  local private=""
  if [ "$i" = 1 ] && [ -n "${NETNS_PRIVATE_DIR:-}" ]; then
    private="mount -t tmpfs smallmind-private '${NETNS_PRIVATE_DIR}' && "
  fi
  # like ssh, the words are one command line for a shell (Open MPI sends "VAR=..; export VAR; orted ...")
  exec ip netns exec "${NS[$i]}" unshare --uts --mount --propagation private \
    sh -c "hostname ${NS[$i]} && ${private}$*"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  on0) shift; exec ip netns exec "${NS[0]}" unshare --uts sh -c 'hostname "$0" && exec "$@"' "${NS[0]}" "$@" ;;
  rsh) shift; i=$(ns_index "$1"); shift; on "$i" "$@" ;;
  hostfile) printf '%s slots=1\n%s slots=1\n' "${NS[0]}" "${NS[1]}" > "$2" ;;
  *) echo "usage: $0 up|down|on0 CMD...|rsh HOST CMD...|hostfile FILE" >&2; exit 2 ;;
esac
