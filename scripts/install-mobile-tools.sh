#!/bin/sh
# The mobile target's TVM aarch64 variant needs a cross g++ and (to verify it here) qemu-user.
# Installed with apt-get where this runs as root; elsewhere the variant is skipped with the reason
# (the ORT Mobile variant is always built). Never fails the install.
PKGS="g++-aarch64-linux-gnu qemu-user"
if command -v aarch64-linux-gnu-g++ >/dev/null 2>&1 && command -v qemu-aarch64 >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "note: not root or no apt-get: install $PKGS yourself for the mobile target's TVM aarch64 variant"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q $PKGS >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $PKGS >/dev/null 2>&1; } \
    || echo "note: apt-get could not install $PKGS: the mobile target's TVM aarch64 variant will be skipped"
exit 0
