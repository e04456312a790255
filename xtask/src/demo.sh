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
step appshotctl register dbserver --pid-range 1000-1999

echo
echo "==> appshotctl run dbserver -- sh -c '...'   (a \"server\" that starts two workers)"
echo "    Inside, every PID is virtual: from the range 1000-1999."
appshotctl run dbserver -- sh -c '
    sleep 30 & w1=$!
    sleep 30 & w2=$!
    echo "dbserver: my pid (\$\$) is $$, my parent (\$PPID, outside the application) is $PPID"
    echo "dbserver: started workers $w1 and $w2"
    sh -c "echo \"worker shell: my pid is \$\$, my parent is \$PPID\""
    echo
    echo "==> appshotctl show dbserver --type pid   (the system PIDs behind them)"
    appshotctl show dbserver --type pid
    echo
    echo "==> kill $w1; wait $w1   (virtual PIDs reach the right process)"
    kill $w1
    wait $w1 || echo "dbserver: worker $w1 ended with status $?"
    kill $w2
    wait $w2 || true
    echo
    echo "==> kill -0 1   (PID 1 is outside the application: unreachable)"
    kill -0 1 2>&1 || echo "dbserver: kill -0 1 failed, as in a child PID namespace"
    echo
    echo "==> ipcmk -S 2; ipcmk -M 4096; ipcmk -Q   (util-linux, unmodified: a semaphore set,"
    echo "    a shared memory segment and a message queue of the application)"
    ipcmk -S 2
    ipcmk -M 4096
    ipcmk -Q
    echo
    echo "==> ipcs; ipcs -m -p   (inside: only the application'"'"'s objects, their keys as"
    echo "    created, the creator by its virtual PID)"
    ipcs
    ipcs -m -p
'

echo
echo "==> outside: ipcs -m; ipcs -m -p   (the same segment: its random system key, the"
echo "    creator's system PID)"
ipcs -m
ipcs -m -p

echo
echo "==> appshotctl show dbserver --type sem|shm|msg|key   (the system IDs and keys behind)"
for t in sem shm msg key; do appshotctl show dbserver --type $t; done

echo
echo "==> outside the application: system PIDs, untouched"
sh -c 'echo "a shell outside: my pid is $$"'

echo
echo "(dbserver and its workers have exited; the application stays registered)"
step appshotctl list
echo
echo "==> appshotctl unregister dbserver   (its SysV objects outlive its processes)"
appshotctl unregister dbserver 2>&1 || true
step appshotctl unregister dbserver --destroy-ipc
step appshotctl list
step ipcs

echo
echo "==> The source document's story: snapshot, restore, clone"
echo "==> appshotctl run dbserver --create --pid-range 1000-1999 -- dbserver serve &"
echo "    (a semaphore set whose semaphore 0 holds 7, a segment with data, a queue of requests)"
DBSERVER=/usr/libexec/appshot/dbserver-dynamic
appshotctl run dbserver --create --pid-range 1000-1999 -- $DBSERVER serve > /tmp/dbserver.out &
i=0
until grep -q ready /tmp/dbserver.out 2>/dev/null; do
    i=$((i + 1)); [ $i -lt 600 ] || { echo "dbserver did not start"; cat /tmp/dbserver.out; exit 1; }
    sleep 0.1
done
cat /tmp/dbserver.out
for t in sem shm msg; do appshotctl show dbserver --type $t | tail -n +9; done
step appshotctl snapshot dbserver -o /tmp/db.img --kill
wait || true

echo
echo "==> ipcmk -S 1; ipcmk -M 4096; ipcmk -Q   (unrelated objects, outside any application:"
echo "    the system's IDs move on)"
ipcmk -S 1; ipcmk -M 4096; ipcmk -Q
step appshotctl inspect /tmp/db.img

echo
echo "==> appshotctl restore /tmp/db.img -- dbserver check   (same virtual IDs and keys, the"
echo "    value 7, the same bytes and requests)"
appshotctl restore /tmp/db.img -- $DBSERVER check
echo
echo "==> appshotctl show dbserver --type sem|shm|msg   (new system IDs behind the same virtual IDs)"
for t in sem shm msg; do appshotctl show dbserver --type $t | tail -n +9; done

echo
echo "==> appshotctl restore /tmp/db.img --as dbserver2 -- dbserver check   (a clone beside it:"
echo "    the same virtual IDs, objects of its own)"
appshotctl restore /tmp/db.img --as dbserver2 -- $DBSERVER check
for t in sem shm msg; do appshotctl show dbserver2 --type $t | tail -n +9; done
step appshotctl list
step appshotctl unregister dbserver --force --destroy-ipc
step appshotctl unregister dbserver2 --force --destroy-ipc
ipcrm -a

echo
echo "==> dmesg | grep appshot   (what the module logged)"
dmesg | grep 'appshot:'

echo
echo "==> demo finished"
