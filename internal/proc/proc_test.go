package proc

import (
	"bufio"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	line := "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0"
	st, err := ParseStat([]byte(line))
	if err != nil || st.State != 'S' || st.PPid != 1 || st.Pgrp != 4242 || st.Session != 4242 || st.StartTicks != 987654 {
		t.Fatalf("%+v %v", st, err)
	}
	for _, bad := range []string{"", "1 (x) S 1 2", "1 x S 1 2 3"} {
		if _, err := ParseStat([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	own, err := ReadStat(os.Getpid())
	if err != nil || own.Exited() || own.PPid != os.Getppid() {
		t.Fatalf("own stat: %+v %v", own, err)
	}
}

// TestStopGroupPolicy: a group that stops on SIGTERM is gone at once; one that ignores it is SIGKILLed when the
// grace period passes, children included.
func TestStopGroupPolicy(t *testing.T) {
	// start runs script, which prints "ready" once its traps are set and its children started, and returns when
	// it has.
	start := func(script string) (*exec.Cmd, chan error) {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		cmd := exec.Command("sh", "-c", script)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Stdout = w
		err = cmd.Start()
		w.Close()
		if err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		r.SetReadDeadline(time.Now().Add(10 * time.Second))
		if line, err := bufio.NewReader(r).ReadString('\n'); line != "ready\n" {
			t.Fatalf("the script did not get ready: %q %v", line, err)
		}
		return cmd, exited
	}
	cmd, exited := start("sleep 30 & echo ready; wait")
	begin := time.Now()
	err := StopGroup(cmd.Process.Pid, 10*time.Second, exited)
	if err == nil || time.Since(begin) > 5*time.Second || GroupRunning(cmd.Process.Pid) {
		t.Fatalf("a group that stops on SIGTERM: %v after %s, running %v", err, time.Since(begin), GroupRunning(cmd.Process.Pid))
	}
	cmd, exited = start("trap '' TERM; sh -c \"trap '' TERM; echo ready; sleep 30\" & wait")
	begin = time.Now()
	err = StopGroup(cmd.Process.Pid, 300*time.Millisecond, exited)
	if err == nil || !strings.Contains(err.Error(), "killed") || GroupRunning(cmd.Process.Pid) {
		t.Fatalf("a group that ignores SIGTERM: %v, running %v", err, GroupRunning(cmd.Process.Pid))
	}
	if took := time.Since(begin); took < 300*time.Millisecond {
		t.Fatalf("SIGKILL came after %s, before the grace period", took)
	}
}
