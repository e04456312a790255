#!/bin/sh
# `cargo xtask demo`: runs in the release guest as root, with appshot.ko loaded.
# Each step prints a `==>` heading, then the command's own output. Any failure ends
# the demo with that command's status.
set -e

step() {
    echo
    echo "==> $*"
    "$@"
}

step appshotctl --version
step appshotctl register dbserver

echo
echo "==> appshotctl run dbserver -- sh -c '...'   (a \"server\" that starts two children)"
appshotctl run dbserver -- sh -c '
    sleep 3 &
    sleep 3 &
    echo "dbserver pid $$ started children"
    echo
    echo "==> appshotctl list   (while dbserver runs)"
    appshotctl list
    echo
    echo "==> appshotctl show dbserver"
    appshotctl show dbserver
    wait
'

echo
echo "(dbserver and its children have exited; the application stays registered)"
step appshotctl list
step appshotctl unregister dbserver
step appshotctl list

echo
echo "==> dmesg | grep appshot   (what the module logged)"
dmesg | grep 'appshot:'

echo
echo "==> demo finished"
