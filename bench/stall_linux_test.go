package main

import (
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The probe sleeps stallProbeSleep at a time while it runs, and stops
// when asked.
func TestStallProbeRuns(t *testing.T) {
	p := startStallProbe()
	time.Sleep(100 * time.Millisecond)
	h := p.stop()
	// 100 sleeps of 1 ms at most; a loaded machine makes fewer.
	if h.wakeups < 5 || h.wakeups > 110 || h.max < 0 {
		t.Fatalf("%d wakeups, latest %s late, in 100 ms of 1 ms sleeps", h.wakeups, h.max)
	}
	if !h.realtime {
		t.Log("the probe ran at ordinary priority (no root or CAP_SYS_NICE): the report shows ?")
	}
}

// When the probe ends, no thread of the process is left at real-time
// priority.
func TestStallProbeLeavesNoRealTimeThread(t *testing.T) {
	p := startStallProbe()
	time.Sleep(10 * time.Millisecond)
	if !p.stop().realtime {
		t.Skip("the probe could not run at real-time priority here")
	}
	time.Sleep(20 * time.Millisecond)
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil || len(tasks) == 0 {
		t.Fatalf("the process's threads: %v, %v", tasks, err)
	}
	for _, task := range tasks {
		tid, err := strconv.Atoi(task.Name())
		if err != nil {
			t.Fatal(err)
		}
		attr, err := unix.SchedGetAttr(tid, 0)
		if err != nil {
			continue // a thread that has exited
		}
		if attr.Policy != unix.SCHED_NORMAL {
			t.Errorf("thread %d: scheduling policy %d, want %d (SCHED_OTHER)", tid, attr.Policy, unix.SCHED_NORMAL)
		}
	}
}

// The probe's thread is not discarded when it ends: the bench starts the
// service with a parent-death signal (dieWithParent), which Linux sends when
// the thread that forked the child exits, and a thread the probe locked may
// be that one. A first version ended locked, so the runtime discarded its
// thread, and it stopped the measured service in the middle of a run.
func TestStallProbeKeepsChildrenAlive(t *testing.T) {
	started := make(chan *exec.Cmd, 1)
	go func() { // forked from an ordinary goroutine, as service.start does
		cmd := exec.Command("sleep", "60")
		cmd.SysProcAttr = dieWithParent()
		if err := cmd.Start(); err != nil {
			t.Error(err)
		}
		started <- cmd
	}()
	cmd := <-started
	if t.Failed() {
		return
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	for i := range 50 {
		p := startStallProbe()
		time.Sleep(time.Millisecond)
		p.stop()
		select {
		case err := <-exited:
			t.Fatalf("the child exited after %d probes: %v", i+1, err)
		case <-time.After(time.Millisecond):
		}
	}
	_ = cmd.Process.Kill()
	<-exited
}
