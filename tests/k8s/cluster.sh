#!/bin/sh
# A real Kubernetes control plane for the tests, on 127.0.0.1 only:
#   cluster.sh build      build (or reuse) the binaries under $DCONN_K8S_CACHE (default
#                         ~/.cache/dconn-k8s/VERSION/bin): kube-apiserver, kube-controller-manager,
#                         kube-scheduler (k8s.io/kubernetes at VERSION, from the Go module proxy),
#                         etcd (its server library at the version Kubernetes pins) and kwok
#                         (sigs.k8s.io/kwok at KWOK_VERSION: the nodes' kubelets, simulated, as
#                         ./kwok-stages.yaml says)
#   cluster.sh up DIR     start one in DIR: certificates made for this run, RBAC on, service-account
#                         tokens issued, free ports; writes DIR/kubeconfig (cluster admin, cluster,
#                         user and context named after DIR's last component), registers the six
#                         nodes of examples/cloudedge/cluster.json with their labels and waits
#                         until kwok has made them Ready
#   cluster.sh down DIR   stop everything `up DIR` started (which stops itself after
#                         DCONN_K8S_LIFETIME seconds, default 3600, should nobody call down)
# Several clusters can run at once, each in its own DIR.
set -eu

VERSION=v1.37.2
KWOK_VERSION=v0.8.0
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CACHE=${DCONN_K8S_CACHE:-$HOME/.cache/dconn-k8s/$VERSION/bin}
PROGRAMS="kube-apiserver kube-controller-manager kube-scheduler etcd kwok"
NODES=${DCONN_K8S_NODES:-$ROOT/examples/cloudedge/cluster.json}
KUBECTL=${KUBECTL:-kubectl}
LIFETIME=${DCONN_K8S_LIFETIME:-3600} # seconds before a cluster stops itself

die() {
	echo "cluster.sh: $*" >&2
	exit 1
}

# package_of PROGRAM: what go build builds for it
package_of() {
	case $1 in
	kube-*) echo "k8s.io/kubernetes/cmd/$1" ;;
	*) echo "./cmd/$1" ;;
	esac
}

# The programs to build: missing ones, ours (etcd) when its source is newer, kwok when it is not
# KWOK_VERSION's.
stale() {
	for p in $PROGRAMS; do
		if [ ! -x "$CACHE/$p" ]; then
			echo "$p"
		elif [ "$p" = kwok ]; then
			[ "$(cat "$CACHE/kwok.version" 2>/dev/null)" = "$KWOK_VERSION" ] || echo kwok
		elif [ -d "$HERE/cmd/$p" ] && [ -n "$(find "$HERE/cmd/$p" "$HERE/go.mod" -newer "$CACHE/$p")" ]; then
			echo "$p"
		fi
	done
}

build() {
	[ -n "$(stale)" ] || return 0
	mkdir -p "$CACHE"
	# one build at a time: two clusters started together wait for the same binaries
	exec 9>"$CACHE/.lock"
	flock 9
	todo=$(stale | tr '\n' ' ')
	[ -n "$todo" ] || return 0
	echo "cluster.sh: building $todo (Kubernetes $VERSION) into $CACHE; the first time takes long" >&2
	start=$(date +%s)
	ld="-s -w -X k8s.io/component-base/version.gitVersion=$VERSION"
	ld="$ld -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37"
	ld="$ld -X k8s.io/client-go/pkg/version.gitVersion=$VERSION"
	pkgs=$(for p in $todo; do [ "$p" = kwok ] || package_of "$p"; done)
	# shellcheck disable=SC2086 # one package a word
	[ -z "$pkgs" ] ||
		(cd "$HERE" && nice -n 19 go build -buildvcs=false -trimpath -ldflags "$ld" -o "$CACHE/" $pkgs) ||
		die "go build failed (module proxy: $(go env GOPROXY))"
	# kwok is built by its own module at its release, outside tests/k8s/go.mod's pins
	case " $todo " in
	*" kwok "*)
		(cd "$CACHE" && GOBIN="$CACHE" nice -n 19 go install -trimpath -ldflags "-s -w" \
			"sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION") ||
			die "go install sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION failed (module proxy: $(go env GOPROXY))"
		echo "$KWOK_VERSION" >"$CACHE/kwok.version"
		;;
	esac
	echo "cluster.sh: built in $(($(date +%s) - start)) s" >&2
}

# The annotation that marks the nodes kwok plays the kubelet of.
KWOK_NODE=kwok.x-k8s.io/node=fake

# node_objects CLUSTER_JSON: a List of the Nodes it names, with their labels, annotated for kwok and
# given an address each (what a kubelet would register; kwok reports the rest)
node_objects() {
	python3 - "$1" "${KWOK_NODE%%=*}" "${KWOK_NODE#*=}" <<'EOF'
import json, sys
nodes = json.load(open(sys.argv[1]))["nodes"]
if not nodes:
    sys.exit(sys.argv[1] + " lists no nodes")
print(json.dumps({"apiVersion": "v1", "kind": "List", "items": [{
    "apiVersion": "v1", "kind": "Node",
    "metadata": {"name": n["metadata"]["name"], "labels": n["metadata"].get("labels", {}),
                 "annotations": {sys.argv[2]: sys.argv[3]}},
    "status": {"addresses": [{"type": "InternalIP", "address": "10.77.0.%d" % (i + 1)},
                             {"type": "Hostname", "address": n["metadata"]["name"]}]},
} for i, n in enumerate(nodes)]}))
EOF
}

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# certs DIR: a CA, the API server's serving certificate, a client certificate per component and
# the service-account signing key, all made for this run.
certs() {
	d=$1/pki
	mkdir -p "$d"
	(
		cd "$d"
		ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
		openssl req -x509 $ec -keyout ca.key -out ca.crt -days 2 -subj "/CN=dconn-test-ca-$2" 2>/dev/null
		printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' >server.ext
		openssl req $ec -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver 2>/dev/null
		openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -set_serial 2 -days 2 \
			-extfile server.ext -out apiserver.crt 2>/dev/null
		printf 'extendedKeyUsage=clientAuth\n' >client.ext
		serial=3
		for who in admin:system:masters controller-manager:system:kube-controller-manager \
			scheduler:system:kube-scheduler kwok:system:masters; do
			name=${who%%:*} subj=${who#*:}
			case $name in
			admin | kwok) s="/O=$subj/CN=$name" ;;
			*) s="/CN=$subj" ;;
			esac
			openssl req $ec -keyout "$name.key" -out "$name.csr" -subj "$s" 2>/dev/null
			openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -set_serial $serial -days 2 \
				-extfile client.ext -out "$name.crt" 2>/dev/null
			serial=$((serial + 1))
		done
		openssl ecparam -name prime256v1 -genkey -noout -out sa.key
		openssl ec -in sa.key -pubout -out sa.pub 2>/dev/null
		rm -f ./*.csr
	)
}

# kubeconfig FILE NAME USER-CERT-BASENAME URL
kubeconfig() {
	d=$(dirname "$1")/pki
	cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: $2
  cluster:
    server: $4
    certificate-authority: $d/ca.crt
users:
- name: $2
  user:
    client-certificate: $d/$3.crt
    client-key: $d/$3.key
contexts:
- name: $2
  context: {cluster: $2, user: $2}
current-context: $2
EOF
}

# start DIR NAME CMD...: in the background, in its own session, output to DIR/logs/NAME.log
start() {
	sdir=$1 sname=$2
	shift 2
	setsid "$@" >"$sdir/logs/$sname.log" 2>&1 </dev/null &
	echo "$! $sname" >>"$sdir/pids"
}

# wait_for SECONDS WHAT CMD...: until CMD succeeds
wait_for() {
	limit=$1 what=$2
	shift 2
	i=0
	until "$@" >/dev/null 2>&1; do
		i=$((i + 1))
		[ $i -le $((limit * 2)) ] || return 1
		sleep 0.5
	done
}

failed() {
	echo "cluster.sh: $1; the logs:" >&2
	for f in "$2"/logs/*.log; do
		echo "== $f" >&2
		tail -n 15 "$f" >&2
	done
	down "$2"
	exit 1
}

up() {
	dir=$1
	[ ! -e "$dir/pids" ] || die "$dir already holds a cluster: cluster.sh down $dir first"
	build
	mkdir -p "$dir/logs"
	dir=$(cd "$dir" && pwd)
	name=$(basename "$dir")
	: >"$dir/pids"
	certs "$dir" "$name"
	p=$dir/pki
	etcd_port=$(free_port) peer_port=$(free_port) api_port=$(free_port)
	cm_port=$(free_port) sched_port=$(free_port)
	url=https://127.0.0.1:$api_port
	kubeconfig "$dir/kubeconfig" "$name" admin "$url"
	kubeconfig "$dir/controller-manager.kubeconfig" "$name" controller-manager "$url"
	kubeconfig "$dir/scheduler.kubeconfig" "$name" scheduler "$url"
	kubeconfig "$dir/kwok.kubeconfig" "$name" kwok "$url"

	# a test that dies without its teardown leaves nothing running for long
	setsid sh -c 'sleep "$1"; exec "$2" down "$3"' watchdog "$LIFETIME" "$HERE/cluster.sh" "$dir" \
		>/dev/null 2>&1 </dev/null &
	echo $! >"$dir/watchdog"
	start "$dir" etcd "$CACHE/etcd" -data-dir "$dir/etcd" \
		-listen-client "http://127.0.0.1:$etcd_port" -listen-peer "http://127.0.0.1:$peer_port"
	start "$dir" kube-apiserver "$CACHE/kube-apiserver" \
		--etcd-servers="http://127.0.0.1:$etcd_port" \
		--bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
		--endpoint-reconciler-type=none \
		--tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" \
		--client-ca-file="$p/ca.crt" --authorization-mode=RBAC \
		--requestheader-client-ca-file="$p/ca.crt" --requestheader-allowed-names=front-proxy \
		--requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
		--requestheader-extra-headers-prefix=X-Remote-Extra- \
		--service-account-key-file="$p/sa.pub" --service-account-signing-key-file="$p/sa.key" \
		--service-account-issuer=https://kubernetes.default.svc \
		--service-cluster-ip-range=10.96.0.0/16 --cert-dir="$dir/pki" --profiling=false
	wait_for 120 "the API server" $KUBECTL --kubeconfig "$dir/kubeconfig" get --raw /readyz ||
		failed "the API server did not become ready within 120 s" "$dir"
	start "$dir" kube-controller-manager "$CACHE/kube-controller-manager" \
		--kubeconfig="$dir/controller-manager.kubeconfig" \
		--authentication-kubeconfig="$dir/controller-manager.kubeconfig" \
		--authorization-kubeconfig="$dir/controller-manager.kubeconfig" \
		--bind-address=127.0.0.1 --secure-port="$cm_port" --leader-elect=false \
		--service-account-private-key-file="$p/sa.key" --root-ca-file="$p/ca.crt" \
		--use-service-account-credentials=true --profiling=false
	start "$dir" kube-scheduler "$CACHE/kube-scheduler" \
		--kubeconfig="$dir/scheduler.kubeconfig" \
		--authentication-kubeconfig="$dir/scheduler.kubeconfig" \
		--authorization-kubeconfig="$dir/scheduler.kubeconfig" \
		--bind-address=127.0.0.1 --secure-port="$sched_port" --leader-elect=false --profiling=false
	k="$KUBECTL --kubeconfig $dir/kubeconfig"
	node_objects "$NODES" | $k apply -f - >/dev/null 2>"$dir/logs/nodes.log" ||
		failed "could not register the nodes of $NODES" "$dir"
	# HOME: kwok also reads ~/.kwok/kwok.yaml when there is one; this run's config is the file given.
	# No --server-address and no --node-port: kwok serves nothing, it only talks to the API server.
	start "$dir" kwok env HOME="$dir" "$CACHE/kwok" --kubeconfig="$dir/kwok.kubeconfig" \
		--config="$HERE/kwok-stages.yaml" --manage-nodes-with-annotation-selector="$KWOK_NODE" \
		--node-lease-duration-seconds=40 --cidr=10.78.0.0/16
	wait_for 120 "Ready nodes" $k wait --for=condition=Ready node --all --timeout=1s ||
		failed "the nodes did not become Ready within 120 s" "$dir"
	# pods need the namespace's default ServiceAccount, which the controller manager makes
	wait_for 120 "the default ServiceAccount" $k get serviceaccount default -n default ||
		failed "no default ServiceAccount within 120 s" "$dir"
	echo "cluster.sh: $name up at $url ($dir/kubeconfig)" >&2
}

# gone PID: exited (a zombie counts: this container's init may not reap what it inherits)
gone() {
	! kill -0 "$1" 2>/dev/null || [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" = Z ]
}

down() {
	dir=$1
	[ -e "$dir/pids" ] || return 0
	# one at a time, the nodes first and etcd last: nothing is left retrying a store that is gone
	for pid in $(tac "$dir/pids" | cut -d' ' -f1); do
		kill "$pid" 2>/dev/null || true
		i=0
		until gone "$pid"; do
			i=$((i + 1))
			if [ $i -ge 50 ]; then
				kill -9 "$pid" 2>/dev/null || true
				break
			fi
			sleep 0.1
		done
	done
	rm -f "$dir/pids"
	if [ -e "$dir/watchdog" ]; then
		# unless this is the watchdog itself, come to stop it all
		[ "$(cat "$dir/watchdog")" = $$ ] || kill -- "-$(cat "$dir/watchdog")" 2>/dev/null || true
		rm -f "$dir/watchdog"
	fi
}

case ${1:-} in
build) build ;;
up)
	[ $# -eq 2 ] || die "usage: cluster.sh up DIR"
	up "$2"
	;;
down)
	[ $# -eq 2 ] || die "usage: cluster.sh down DIR"
	down "$2"
	;;
*) die "usage: cluster.sh build | up DIR | down DIR" ;;
esac
