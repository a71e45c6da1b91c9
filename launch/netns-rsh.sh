#!/usr/bin/env bash
# netns-rsh.sh: stands in for ssh when Open MPI starts its daemons (orted) on the "hosts" made
# by launch/multihost.sh, which are network namespaces on this machine.
#
#   netns-rsh.sh [ssh-style options] HOST COMMAND...
#
# mpirun calls it as `--mca plm_rsh_agent .../netns-rsh.sh`. HOST is one of the namespace
# addresses of the hostfile; DPTRAIN_NETNS_MAP ("ADDR=NAMESPACE ADDR=NAMESPACE ...", set by
# multihost.sh and inherited through mpirun) says which namespace owns it. Like ssh, it joins
# COMMAND's words with spaces and gives them to a shell, here `sh -c` inside that namespace
# (and in a UTS namespace whose hostname is HOST, as on a real host).
# The environment is kept (ip netns exec does not clear it), so PATH, LD_LIBRARY_PATH and
# OMPI_* reach orted and the ranks as they were in mpirun.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

# Skip ssh-style options that Open MPI or plm_rsh_args may put before the host name; those
# that take a value skip it too.
while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do
    case $1 in
        -o|-p|-l|-i|-F|-b|-c|-e|-m|-E|-J) shift 2 ;;
        *) shift ;;
    esac
done
if [ $# -lt 2 ]; then
    echo "netns-rsh.sh: usage: netns-rsh.sh HOST COMMAND..." >&2
    exit 255
fi
host=$1
shift

# Address -> namespace, from the map; an unknown host is an error (exit 255, as ssh does),
# never a fall-through to the real network.
ns=""
for entry in ${DPTRAIN_NETNS_MAP:-}; do
    if [ "${entry%%=*}" = "$host" ]; then
        ns=${entry#*=}
    fi
done
if [ -z "$ns" ]; then
    echo "netns-rsh.sh: host '$host' is not in DPTRAIN_NETNS_MAP ('${DPTRAIN_NETNS_MAP:-}')" >&2
    exit 255
fi
# A UTS namespace of its own too, with HOST as its hostname: Open MPI tells nodes apart by
# hostname (shared-memory segment names, session directories, which ranks share a node), and
# all namespaces would otherwise share this machine's name.
exec ip netns exec "$ns" unshare --uts sh -c "hostname '$host' || exit 255; $*"
