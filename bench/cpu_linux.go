package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTick is the unit of the times in /proc (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

type cpuMeter struct {
	servicePID    int
	postmasterPID int
}

// newCPUMeter finds the cluster's postmaster in DATA_DIR/postgres/postmaster.pid.
func newCPUMeter(svc *service) (cpuMeter, error) {
	b, err := os.ReadFile(filepath.Join(svc.dataDir, "postgres", "postmaster.pid"))
	if err != nil {
		return cpuMeter{}, fmt.Errorf("find the postmaster: %w", err)
	}
	pid, err := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
	if err != nil {
		return cpuMeter{}, fmt.Errorf("find the postmaster: %w", err)
	}
	return cpuMeter{servicePID: svc.pid(), postmasterPID: pid}, nil
}

func (m cpuMeter) read() (cpuUse, error) {
	var u cpuUse
	svc, err := readProcStat(m.servicePID)
	if err != nil {
		return u, err
	}
	u.service = svc.own()
	pm, err := readProcStat(m.postmasterPID)
	if err != nil {
		return u, err
	}
	// Backends that exited are in the postmaster's children's times; live ones
	// are counted one by one.
	u.postgres = pm.own() + pm.children()
	procs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range procs {
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if st, err := readProcStat(pid); err == nil && st.ppid == m.postmasterPID {
			u.postgres += st.own()
			u.backends++
		}
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return u, err
	}
	u.bench = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	u.machine, u.stolen, err = machineTimes()
	return u, err
}

// procStat holds the fields of /proc/PID/stat that matter here.
type procStat struct {
	ppid                         int
	utime, stime, cutime, cstime int64 // clock ticks
}

func (s procStat) own() time.Duration      { return time.Duration(s.utime+s.stime) * clockTick }
func (s procStat) children() time.Duration { return time.Duration(s.cutime+s.cstime) * clockTick }

func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	// The command name, in parentheses, may hold spaces: count fields after it.
	_, rest, ok := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 15 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	n := func(i int) int64 { v, _ := strconv.ParseInt(f[i], 10, 64); return v }
	// f[0] is field 3 (state) of proc(5).
	return procStat{ppid: int(n(1)), utime: n(11), stime: n(12), cutime: n(13), cstime: n(14)}, nil
}

// machineTimes is the time all CPUs spent not idle, and the part of it the
// hypervisor gave to other guests (steal), from /proc/stat.
func machineTimes() (busy, stolen time.Duration, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return parseCPULine(line)
}

// parseCPULine reads /proc/stat's first line: "cpu user nice system idle
// iowait irq softirq steal ...", in clock ticks. Busy is all but idle and
// iowait; steal is time this machine's CPUs were runnable but ran another
// guest, which a guest's clock counts as spent.
func parseCPULine(line string) (busy, stolen time.Duration, err error) {
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("/proc/stat: unexpected format")
	}
	var ticks, steal int64
	for i, v := range f[1:9] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		ticks += n
		if i == 7 {
			steal = n
		}
	}
	return time.Duration(ticks) * clockTick, time.Duration(steal) * clockTick, nil
}
