#!/usr/bin/env python3
"""Wake-up floor of this machine at serial line rate: the cheapest possible reader (`cat`,
pinned to CPU 0) woken by one 43-byte frame every 3.73 ms on a pty (115200 baud 8N1, the
binary telemetry frame size), writer pinned to CPU 1 by the caller. Prints the reader's CPU
time per frame: the part of the hub's per-frame CPU at line rate that any process which wakes
per frame pays on this machine. Run: taskset -c 1 python3 bench/peers/pty_wake_floor.py
"""
import os, pty, time, subprocess, sys
master, slave = pty.openpty()
import tty; tty.setraw(slave)
name = os.ttyname(slave)
# reader: `cat` on the slave, pinned to CPU 0
reader = subprocess.Popen(["taskset","-c","0","sh","-c",f"exec cat {name} > /dev/null"])
os.close(slave)
time.sleep(0.5)
def cpu(pid):
    with open(f"/proc/{pid}/schedstat") as f: return int(f.read().split()[0])
frame = b"\x01"*42 + b"\x00"
period = 43/11520.0
start_cpu = cpu(reader.pid); t0 = time.monotonic(); n = 0
next_t = t0
while time.monotonic() - t0 < 10:
    now = time.monotonic()
    if now >= next_t:
        os.write(master, frame); n += 1; next_t += period
    else:
        time.sleep(max(0, next_t - now))
used = cpu(reader.pid) - start_cpu
print(f"frames {n}, {n/10:.1f}/s, reader CPU {used/1e6:.1f} ms, {used/1e3/n:.1f} us/frame")
reader.kill()
