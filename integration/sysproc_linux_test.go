package integration

import "syscall"

// sysProcAttr puts each node in its own process group (so a kill reaches anything it starts) and has the kernel
// kill it if the test binary dies first, so that no node outlives a crashed or interrupted test run.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

func killGroup(pid int, sig syscall.Signal) error { return syscall.Kill(-pid, sig) }
