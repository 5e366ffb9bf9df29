#!/bin/sh
# xpod edge installer, served by every xpod center at /install.sh.
#
#   curl -fsSL @CENTER@/install.sh | sudo sh -s -- --token xpt_...
#
# or, to have the script check itself against the signed manifest too:
#
#   curl -fsSLO @CENTER@/install.sh && sudo sh install.sh --token xpt_...
#
# Options:
#   --token xpt_...   the join token (`xpod tokens create` on a center); or XPOD_JOIN_TOKEN
#   --join HOST:PORT  the center's QUIC endpoint to join through [default: @JOIN@]
#   --root DIR        write the files under DIR as if it were /, start nothing (no root needed)
#   --no-start        install, but do not enable or start the service
#
# Trust: the token carries the SHA-256 fingerprint of the cluster CA. Before anything is
# installed, this script checks that the CA the center hands out has that fingerprint, that
# the center's certificate is signed by that CA, and that the manifest (the SHA-256 of this
# script and of the binary) carries the center's signature; the binary, and this script when
# run from a file, must match the manifest. The installed node pins the same CA when it joins.
# Then `xpod service install` installs the binary, the systemd unit and the token (in a 0600
# file, never in the unit).
set -eu

CENTER='@CENTER@'
JOIN='@JOIN@'
ARCH='@ARCH@'

say() { printf '==> %s\n' "$*" >&2; }
die() {
  printf 'xpod install: %s\n' "$*" >&2
  exit 1
}

token="${XPOD_JOIN_TOKEN:-}"
join="$JOIN"
root=""
no_start=""
while [ $# -gt 0 ]; do
  case "$1" in
    --token) [ $# -ge 2 ] || die "--token needs a value"; token="$2"; shift 2 ;;
    --token=*) token="${1#--token=}"; shift ;;
    --join) [ $# -ge 2 ] || die "--join needs a value"; join="$2"; shift 2 ;;
    --join=*) join="${1#--join=}"; shift ;;
    --root) [ $# -ge 2 ] || die "--root needs a value"; root="$2"; shift 2 ;;
    --root=*) root="${1#--root=}"; shift ;;
    --no-start) no_start=1; shift ;;
    -h | --help) sed -n '2,21p' "$0" 2>/dev/null | sed 's/^# \{0,1\}//' || true; exit 0 ;;
    *) die "unknown option: $1 (options: --token, --join, --root, --no-start)" ;;
  esac
done

[ -n "$token" ] || die "a join token is required: sh -s -- --token xpt_... (create one on a center: xpod tokens create)"
printf '%s' "$token" | grep -Eq '^xpt_[0-9a-fA-F]{12}\.[0-9a-fA-F]{64}\.[0-9a-fA-F]{64}$' ||
  die "--token is not a join token (expected xpt_<12 hex>.<64 hex>.<64 hex>)"
fingerprint=$(printf '%s' "${token##*.}" | tr 'A-F' 'a-f')

os=$(uname -s)
[ "$os" = Linux ] || die "unsupported operating system: $os (xpod edges run on Linux)"
machine=$(uname -m)
case "$machine" in
  x86_64 | amd64) arch=x86_64 ;;
  aarch64 | arm64) arch=aarch64 ;;
  *) die "unsupported architecture: $machine (xpod edges run on x86_64 and aarch64)" ;;
esac
[ "$arch" = "$ARCH" ] ||
  die "this center serves the xpod binary for linux-$ARCH only, and this machine is linux-$arch"
if [ -z "$root" ] && [ "$(id -u)" != 0 ]; then
  die "run as root (curl ... | sudo sh -s -- --token ...), or pass --root DIR to write the files under DIR"
fi
for tool in curl openssl sha256sum awk; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required and not installed"
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

fetch() {
  curl -fsS --proto '=http,https' -o "$tmp/$1" "$CENTER/-/install/$1" ||
    die "downloading $CENTER/-/install/$1 failed"
}

say "checking $CENTER against the cluster CA your token names"
fetch ca.crt
got=$(openssl x509 -in "$tmp/ca.crt" -outform der | sha256sum | cut -d' ' -f1)
[ "$got" = "$fingerprint" ] ||
  die "the center's CA (sha256:$got) is not the CA your token names (sha256:$fingerprint); nothing was installed"
fetch node.crt
openssl verify -CAfile "$tmp/ca.crt" "$tmp/node.crt" >/dev/null 2>&1 ||
  die "the center's certificate is not signed by the cluster CA; nothing was installed"
fetch manifest
fetch manifest.sig
openssl x509 -in "$tmp/node.crt" -pubkey -noout >"$tmp/center.pub"
openssl dgst -sha256 -verify "$tmp/center.pub" -signature "$tmp/manifest.sig" "$tmp/manifest" >/dev/null 2>&1 ||
  die "the manifest's signature does not verify with the center's certificate; nothing was installed"

# check FILE NAME: FILE must have the SHA-256 the signed manifest gives for NAME.
check() {
  want=$(awk -v f="$2" '$1 == "sha256" && $3 == f { print $2 }' "$tmp/manifest")
  [ -n "$want" ] || die "the manifest names no $2"
  got=$(sha256sum "$1" | cut -d' ' -f1)
  [ "$got" = "$want" ] || die "$2 does not match the signed manifest (sha256 $got, expected $want); nothing was installed"
}
if [ -f "$0" ] && [ "${0##*/}" = install.sh ]; then
  check "$0" install.sh
  say "this script matches the signed manifest"
else
  say "run from a pipe: this script cannot check itself (download it and run 'sh install.sh' for that)"
fi

say "downloading xpod for linux-$arch"
curl -fS --proto '=http,https' --progress-bar -o "$tmp/xpod" "$CENTER/-/install/xpod-linux-$arch" ||
  die "downloading $CENTER/-/install/xpod-linux-$arch failed"
check "$tmp/xpod" "xpod-linux-$arch"
chmod 0755 "$tmp/xpod"
say "verified $("$tmp/xpod" --version)"

set -- service install --join "$join"
[ -z "$root" ] || set -- "$@" --root "$root"
[ -z "$no_start" ] || set -- "$@" --no-start
# The token goes through the environment, not the command line (which others can read).
XPOD_JOIN_TOKEN="$token" "$tmp/xpod" "$@"
