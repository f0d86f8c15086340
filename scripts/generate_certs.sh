#!/usr/bin/env bash
# Generates a test CA, a server certificate (SAN DNS:localhost, IP:127.0.0.1) and a client
# certificate (clientAuth) for NATS and HTTPS with client verification. For development
# and tests only. Usage: scripts/generate_certs.sh [DIR]   (default _artifacts/certs)
# Existing files are kept; delete the directory to start over.
set -euo pipefail
cd "$(dirname "$0")/.."

dir="${1:-_artifacts/certs}"
days=825

if ! command -v openssl >/dev/null 2>&1; then
  echo "openssl not found: apt-get install -y openssl" >&2
  exit 1
fi

if [ -s "$dir/ca.crt" ] && [ -s "$dir/server.crt" ] && [ -s "$dir/client.crt" ]; then
  echo "certificates already in $dir (delete it to regenerate)"
  exit 0
fi

mkdir -p "$dir"
umask 077
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# key NAME: a P-256 private key, readable by its owner only.
key() {
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/$1.key" 2>/dev/null
  chmod 600 "$dir/$1.key"
}

# sign NAME SUBJECT EXTENSIONS: a certificate for NAME's key, signed by the CA.
sign() {
  openssl req -new -key "$dir/$1.key" -subj "$2" -out "$tmp/$1.csr"
  printf '%b\n' "$3" >"$tmp/$1.ext"
  openssl x509 -req -in "$tmp/$1.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -CAcreateserial -CAserial "$tmp/ca.srl" -days "$days" -sha256 \
    -extfile "$tmp/$1.ext" -out "$dir/$1.crt" 2>/dev/null
  chmod 644 "$dir/$1.crt"
}

key ca
openssl req -x509 -new -key "$dir/ca.key" -subj "/CN=Shardline Test CA" -days "$days" \
  -sha256 -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$dir/ca.crt"
chmod 644 "$dir/ca.crt"

key server
sign server "/CN=localhost" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1"

key client
sign client "/CN=shardline-client" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"

openssl verify -CAfile "$dir/ca.crt" "$dir/server.crt" "$dir/client.crt" >/dev/null
echo "wrote $dir: ca.crt ca.key server.crt server.key client.crt client.key"
