#!/usr/bin/env bash
# phonewatch certificates for Mosquitto TLS with per-unit client certificates (openssl CLI).
#
#   make-certs.sh ca     DIR                 -> DIR/ca.key, DIR/ca.crt          (the fleet CA)
#   make-certs.sh server DIR HOST [HOST...]  -> DIR/server.key, DIR/server.crt  (the broker)
#   make-certs.sh client DIR NAME            -> DIR/NAME.key, DIR/NAME.crt      (a unit or 'controlroom')
#
# A client certificate's CN is the MQTT username (Mosquitto `use_identity_as_username`), so NAME
# must be the unit id (letters, digits, '-', '_'), or the control room's name in the ACL.
# Keys are EC P-256, mode 0600. Nothing is overwritten. Keep ca.key offline in production.
# A unit's alert-signing pair shares the folder without a clash: `phonewatch keys generate
# --unit NAME --out DIR` writes DIR/NAME.sign.key and DIR/NAME.sign.pub (docs/field.md).
set -euo pipefail

usage() { sed -n '2,10p' "$0" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1; dir=$2; shift 2
days_ca=${CA_DAYS:-3650}
days=${CERT_DAYS:-825}
mkdir -p "$dir"
umask 077

newkey() {  # path
    [ -e "$1" ] && { echo "make-certs: $1 exists; refusing to overwrite" >&2; exit 1; }
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

need_ca() {
    [ -f "$dir/ca.key" ] && [ -f "$dir/ca.crt" ] || {
        echo "make-certs: no CA in $dir (run: $0 ca $dir)" >&2; exit 1; }
}

sign() {  # name subject extfile
    local name=$1 subj=$2 ext=$3
    openssl req -new -key "$dir/$name.key" -subj "$subj" -out "$dir/$name.csr"
    openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
        -CAcreateserial -days "$days" -sha256 -extfile "$ext" -out "$dir/$name.crt" 2>/dev/null
    rm -f "$dir/$name.csr" "$ext"
    chmod 644 "$dir/$name.crt"
}

case "$cmd" in
ca)
    newkey "$dir/ca.key"
    openssl req -x509 -new -key "$dir/ca.key" -sha256 -days "$days_ca" \
        -subj "/O=phonewatch/CN=phonewatch fleet CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$dir/ca.crt"
    chmod 644 "$dir/ca.crt"
    echo "$dir/ca.crt"
    ;;
server)
    [ $# -ge 1 ] || usage
    need_ca
    san=""
    for h in "$@"; do
        if [[ $h =~ ^[0-9.]+$ || $h == *:* ]]; then san+="IP:$h,"; else san+="DNS:$h,"; fi
    done
    ext=$(mktemp)
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyAgreement\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' "${san%,}" >"$ext"
    newkey "$dir/server.key"
    sign server "/O=phonewatch/CN=$1" "$ext"
    echo "$dir/server.crt"
    ;;
client)
    [ $# -eq 1 ] || usage
    name=$1
    [[ $name =~ ^[A-Za-z0-9_-]{1,64}$ ]] || { echo "make-certs: bad name '$name'" >&2; exit 2; }
    need_ca
    ext=$(mktemp)
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyAgreement\nextendedKeyUsage=clientAuth\n' >"$ext"
    newkey "$dir/$name.key"
    sign "$name" "/O=phonewatch/CN=$name" "$ext"
    echo "$dir/$name.crt"
    ;;
*) usage ;;
esac
