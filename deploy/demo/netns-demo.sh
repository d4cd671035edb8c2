#!/usr/bin/env bash
# eastwest netns demo: two "clusters" as Linux network namespaces joined by
# one veth pair, each with an eastwest gateway on :15443 and mTLS endpoints
# in two localities. A client in cluster 1 reaches reviews in cluster 2
# through cluster 2's gateway with both Istio SNI forms; then cluster 2's
# local-zone endpoints are stopped and the traffic fails over to the other
# zone. Prints a before/after table (endpoint -> requests answered).
#
#   bash deploy/demo/netns-demo.sh bin/eastwest        (as root; `make demo`)
#
# Needs root, iproute2 (ip), timeout and go (to build deploy/demo/sidecar).
# Every address (10.200.0.0/16) exists only inside the namespaces this
# script makes; the host's interfaces, routes and firewall are not touched:
# the veth pair is created inside cluster 1's namespace with its peer moved
# straight into cluster 2's. Everything it made is removed on exit, also on
# failure or timeout. Environment: DEMO_TIMEOUT (seconds, default 75),
# DEMO_REQUESTS (per SNI and phase, default 20), GO, EASTWEST_FORWARDER.
set -euo pipefail

usage() { echo "usage: $0 path/to/eastwest" >&2; exit 2; }

# ---- outer part: bounded in time, always cleans up -------------------------
if [[ "${1:-}" != "--inner" ]]; then
	[[ $# -eq 1 ]] || usage
	bin=$(realpath "$1")
	[[ -x "$bin" ]] || { echo "netns-demo: $1 is not an executable" >&2; exit 2; }
	[[ $(id -u) -eq 0 ]] || { echo "netns-demo: needs root (network namespaces)" >&2; exit 2; }
	command -v ip >/dev/null || { echo "netns-demo: needs iproute2 (ip)" >&2; exit 2; }
	id=$$
	work=$(mktemp -d /tmp/eastwest-demo.XXXXXX)
	cleanup() {
		# Processes first (a live process keeps its namespace), by the PIDs
		# the inner part recorded, then the namespaces, then the files.
		if [[ -f "$work/pids" ]]; then
			while read -r pid; do kill -TERM "$pid" 2>/dev/null || true; done <"$work/pids"
			for _ in 1 2 3 4 5 6 7 8 9 10; do
				alive=0
				while read -r pid; do kill -0 "$pid" 2>/dev/null && alive=1; done <"$work/pids"
				[[ $alive -eq 0 ]] && break
				sleep 0.3
			done
			while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done <"$work/pids"
		fi
		for ns in "ew${id}-c1" "ew${id}-c2"; do
			ip netns del "$ns" 2>/dev/null || true
		done
		rm -rf "$work"
	}
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	rc=0
	timeout --kill-after=5 "${DEMO_TIMEOUT:-75}" bash "$0" --inner "$bin" "$id" "$work" || rc=$?
	[[ $rc -eq 124 ]] && echo "netns-demo: timed out after ${DEMO_TIMEOUT:-75} s" >&2
	exit "$rc"
fi

# ---- inner part ------------------------------------------------------------
bin=$2 id=$3 work=$4
n=${DEMO_REQUESTS:-20}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
c1="ew${id}-c1" c2="ew${id}-c2"
in1() { ip netns exec "$c1" "$@"; }
in2() { ip netns exec "$c2" "$@"; }
# bg NS NAME CMD...: start CMD in namespace NS, log to NAME.log, record the PID.
bg() {
	local ns=$1 name=$2; shift 2
	ip netns exec "$ns" "$@" >"$work/$name.log" 2>&1 &
	echo $! >>"$work/pids"
	echo $! >"$work/$name.pid"
}
step() { printf '\n== %s\n' "$*"; }
fail() {
	echo "netns-demo: $*" >&2
	for f in "$work"/*.log; do [[ -s "$f" ]] && { echo "--- $(basename "$f")"; tail -n 20 "$f"; }; done >&2
	exit 1
}

step "building the demo sidecar (deploy/demo/sidecar)"
(cd "$here/../.." && "${GO:-go}" build -o "$work/sidecar" ./deploy/demo/sidecar) || fail "go build failed"
sc=$work/sidecar
"$sc" pki "$work/pki"

step "cluster 1 = netns $c1 (10.200.0.1), cluster 2 = netns $c2 (10.200.0.2)"
ip netns add "$c1"
ip netns add "$c2"
in1 ip link set lo up
in2 ip link set lo up
# Made inside cluster 1, the peer moved into cluster 2: never on the host.
in1 ip link add veth-c1 type veth peer name veth-c2 netns "$c2"
in1 ip addr add 10.200.0.1/24 dev veth-c1
in2 ip addr add 10.200.0.2/24 dev veth-c2
in1 ip link set veth-c1 up
in2 ip link set veth-c2 up
# Workload addresses of each cluster, on its loopback.
for a in 10.200.1.11 10.200.1.21; do in1 ip addr add "$a/32" dev lo; done
for a in 10.200.2.11 10.200.2.12 10.200.2.21; do in2 ip addr add "$a/32" dev lo; done

# mesh NETWORK ZONE1-ADDRS... -- ZONE2-ADDRS...: Istio YAML for reviews.
write_mesh() {
	local net=$1 file=$2 prefix=$3; shift 3
	{
		cat <<YAML
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
    - {number: 9080, name: tcp-reviews, protocol: TCP}
  endpoints:
YAML
		for ep in "$@"; do
			IFS=, read -r addr zone name <<<"$ep"
			echo "    - {address: $addr, locality: region1/$zone, network: $net, serviceAccount: bookinfo-reviews, labels: {app: reviews, name: $name}}"
		done
		cat <<YAML
---
# Istio-style locality failover: localityLbSetting plus outlierDetection.
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy:
    connectionPool:
      tcp: {connectTimeout: 1s}
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 30s
      maxEjectionPercent: 100
    loadBalancer:
      simple: ROUND_ROBIN
      localityLbSetting: {enabled: true}
YAML
	} >"$file"
}

# settings CLUSTER NETWORK ADDR FILE MESH
write_settings() {
	cat >"$4" <<YAML
clusterName: $1
network: $2
namespace: istio-system
locality: region1/zone1
listeners:
  - name: auto-passthrough
    address: $3:15443
    mode: AUTO_PASSTHROUGH
    sniRewrites:
      - {pattern: '\.cluster[0-9]+\.global\$', replacement: '.cluster.local'}
      - {pattern: '\.global\$', replacement: '.svc.cluster.local'}
admin:
  address: 127.0.0.1:15021
mesh:
  paths: [$5]
forwarder: ${EASTWEST_FORWARDER:-auto}
drain: {acceptGrace: 0s, idleClose: 1s, deadline: 2s}
log: {level: info, format: text, accessLog: false}
YAML
}

step "endpoints: reviews in region1/zone1 and region1/zone2 of each cluster"
write_mesh network1 "$work/c1-mesh.yaml" c1 "10.200.1.11,zone1,c1-zone1-a" "10.200.1.21,zone2,c1-zone2-a"
write_mesh network2 "$work/c2-mesh.yaml" c2 "10.200.2.11,zone1,c2-zone1-a" "10.200.2.12,zone1,c2-zone1-b" "10.200.2.21,zone2,c2-zone2-a"
bg "$c1" ep-c1-zone1-a "$sc" serve -name c1-zone1-a -locality region1/zone1 -addr 10.200.1.11:9080 -pki "$work/pki"
bg "$c1" ep-c1-zone2-a "$sc" serve -name c1-zone2-a -locality region1/zone2 -addr 10.200.1.21:9080 -pki "$work/pki"
bg "$c2" ep-c2-zone1-a "$sc" serve -name c2-zone1-a -locality region1/zone1 -addr 10.200.2.11:9080 -pki "$work/pki"
bg "$c2" ep-c2-zone1-b "$sc" serve -name c2-zone1-b -locality region1/zone1 -addr 10.200.2.12:9080 -pki "$work/pki"
bg "$c2" ep-c2-zone2-a "$sc" serve -name c2-zone2-a -locality region1/zone2 -addr 10.200.2.21:9080 -pki "$work/pki"

step "gateways: eastwest in each cluster, locality region1/zone1"
write_settings cluster1 network1 10.200.0.1 "$work/c1.yaml" "$work/c1-mesh.yaml"
write_settings cluster2 network2 10.200.0.2 "$work/c2.yaml" "$work/c2-mesh.yaml"
"$bin" validate --config "$work/c2.yaml" || fail "cluster 2 settings do not validate"
bg "$c1" gw-c1 "$bin" run --config "$work/c1.yaml"
bg "$c2" gw-c2 "$bin" run --config "$work/c2.yaml"
in1 "$sc" wait -url http://127.0.0.1:15021/ready -timeout 10s || fail "cluster 1 gateway not ready"
in2 "$sc" wait -url http://127.0.0.1:15021/ready -timeout 10s || fail "cluster 2 gateway not ready"
echo "both gateways ready"

sni_global=reviews.default.svc.cluster2.global
sni_dnat=outbound_.9080_._.reviews.default.svc.cluster.local

step "before: $n requests per SNI from cluster 1 through cluster 2's gateway"
for sni in "$sni_global" "$sni_dnat"; do
	in1 "$sc" client -gateway 10.200.0.2:15443 -sni "$sni" -n "$n" -pki "$work/pki" -out "$work/before.json" ||
		fail "client failed"
done
echo "and the other way, cluster 2 to cluster 1's gateway:"
in2 "$sc" client -gateway 10.200.0.1:15443 -sni reviews.default.svc.cluster1.global -n 5 -pki "$work/pki" -out "$work/reverse.json" ||
	fail "client failed"

step "stopping cluster 2's local-zone (region1/zone1) endpoints"
for ep in ep-c2-zone1-a ep-c2-zone1-b; do
	pid=$(cat "$work/$ep.pid")
	kill -TERM "$pid"
	wait "$pid" 2>/dev/null || true
	echo "stopped $ep (pid $pid)"
done

step "after: $n requests per SNI again"
for sni in "$sni_global" "$sni_dnat"; do
	in1 "$sc" client -gateway 10.200.0.2:15443 -sni "$sni" -n "$n" -pki "$work/pki" -out "$work/after.json" ||
		fail "client failed"
done

step "cluster 2 endpoints: requests answered (both SNIs)"
"$sc" table "$work/before.json" "$work/after.json"

step "stopping the gateways (SIGTERM: drain)"
for gw in gw-c1 gw-c2; do
	pid=$(cat "$work/$gw.pid")
	kill -TERM "$pid"
	wait "$pid" || fail "$gw exited with an error"
done
grep -h "forwarder" "$work"/gw-c2.log | head -n 1 || true
echo "netns-demo: done"
