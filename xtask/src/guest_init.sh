#!/bin/sh
# /init of the appshot test guest, written by `cargo xtask initramfs`.
# The contract with the host (markers, order) is docs/guest-contract.md.
export PATH=/usr/bin:/bin:/sbin:/usr/sbin
export HOME=/root

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
# Only the debug kernel has debugfs (kmemleak lives there).
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null

KMEMLEAK=/sys/kernel/debug/kmemleak
if [ -w "$KMEMLEAK" ]; then
    # Leaks suspected during boot are not ours: report only what happens from here on.
    echo scan > "$KMEMLEAK"
    echo clear > "$KMEMLEAK"
fi

# `cargo xtask vm --share HOST_DIR`: the host folder, over 9P.
for tag in /sys/bus/virtio/drivers/9pnet_virtio/virtio*/mount_tag; do
    if [ -f "$tag" ] && grep -q appshot_share "$tag"; then
        mkdir -p /mnt/share
        mount -t 9p -o trans=virtio,version=9p2000.L appshot_share /mnt/share || echo "init: cannot mount the shared folder"
    fi
done

insmod /lib/modules/appshot.ko || echo APPSHOT-INSMOD-FAILED

cd /
if [ -f /etc/appshot/job ]; then
    sh /etc/appshot/job
    status=$?
else
    setsid cttyhack sh
    status=$?
fi
cd /

if [ -w "$KMEMLEAK" ]; then
    # kmemleak reports an object only once it is a few seconds old and unreferenced in a
    # scan; the second scan catches what the first one was too early for.
    echo scan > "$KMEMLEAK"
    sleep 6
    echo scan > "$KMEMLEAK"
fi
echo APPSHOT-KMEMLEAK-BEGIN
[ -r "$KMEMLEAK" ] && cat "$KMEMLEAK"
echo APPSHOT-KMEMLEAK-END
echo APPSHOT-DMESG-BEGIN
dmesg
echo APPSHOT-DMESG-END
echo "APPSHOT-EXIT-STATUS: $status"
reboot -f
