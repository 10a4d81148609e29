#!/usr/bin/env bash
# make-certs.sh [DIR] [NODE...] -- a private CA and one certificate per node for Ayder's mTLS
# between nodes (RF_HA_TLS=1). A node's certificate must name its node id (CN and DNS SAN): peers
# check it at the handshake. Defaults: DIR=deploy/certs, nodes n1 n2 n3 (docker-compose.cluster.yml).
#
#   deploy/make-certs.sh                      # deploy/certs/{ca,n1,n2,n3}.{crt,key}
#   deploy/make-certs.sh /etc/ayder/tls n4    # one more node, signed by the existing CA
#
# An existing CA in DIR is reused (so new nodes join an existing cluster); existing node
# certificates are replaced (that is how they are rotated: docs/OPERATIONS.md). Keys are created
# 0600 and, when run as root, owned by AYDER_UID (default 10001, the container image's user);
# otherwise they are made 0644 so the container user can read them (development only).
set -euo pipefail
dir=${1:-"$(dirname "$0")/certs"}
shift || true
nodes=("$@")
[ ${#nodes[@]} -gt 0 ] || nodes=(n1 n2 n3)
days=${CERT_DAYS:-825}
uid=${AYDER_UID:-10001}
mkdir -p "$dir"
cd "$dir"
umask 077
if [ ! -s ca.key ] || [ ! -s ca.crt ]; then
  openssl req -x509 -newkey rsa:3072 -nodes -sha256 -days 3650 -keyout ca.key -out ca.crt \
    -subj "/CN=ayder-cluster-ca" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  echo "make-certs: new CA $dir/ca.crt"
fi
for n in "${nodes[@]}"; do
  case "$n" in *[!A-Za-z0-9._-]*|"") echo "make-certs: bad node id '$n'" >&2; exit 2 ;; esac
  openssl req -newkey rsa:3072 -nodes -sha256 -keyout "$n.key" -out "$n.csr" -subj "/CN=$n" \
    -addext "subjectAltName=DNS:$n" 2>/dev/null
  cat > "$n.ext" <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:$n
EXT
  openssl x509 -req -sha256 -in "$n.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
    -out "$n.crt" -days "$days" -extfile "$n.ext" 2>/dev/null
  rm -f "$n.csr" "$n.ext"
  openssl verify -CAfile ca.crt "$n.crt" >/dev/null
  echo "make-certs: $dir/$n.crt (CN=$n, DNS:$n, $days days)"
done
chmod 0644 ./*.crt
if [ "$(id -u)" -eq 0 ] && chown "$uid:$uid" ./*.key 2>/dev/null; then
  chmod 0600 ./*.key
  chown 0:0 ca.key   # the CA key is never needed by a node
else
  chmod 0644 "${nodes[@]/%/.key}"
  echo "make-certs: not root: node keys made world-readable for the container user (development only)" >&2
fi
chmod 0600 ca.key
