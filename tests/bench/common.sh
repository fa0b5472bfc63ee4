# Sourced by every benchmark script with its arguments: checks the one argument (the dconn
# binary), makes its path absolute and moves to the repository root. Sets DCONN and ROOT.
# shellcheck shell=bash
set -u
export LC_ALL=C
if [ $# -ne 1 ] || [ ! -x "$1" ]; then
  echo "usage: $0 path/to/dconn" >&2
  exit 2
fi
DCONN=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
cd "$(dirname "$0")/../.." || exit 2
ROOT=$PWD
export DCONN ROOT

# A port nobody uses: bound by the kernel, then released.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Writes DIR/nginx.conf for a foreground nginx on 127.0.0.1:PORT serving LOCATION (one
# `location` block), with its pid, logs and temporary files under DIR.
write_nginx_conf() {
  local dir=$1 port=$2 location=$3
  mkdir -p "$dir/logs" "$dir/tmp"
  cat > "$dir/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/logs/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $dir/tmp;
  proxy_temp_path $dir/tmp;
  fastcgi_temp_path $dir/tmp;
  uwsgi_temp_path $dir/tmp;
  scgi_temp_path $dir/tmp;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$port;
    $location
  }
}
CONF
}
