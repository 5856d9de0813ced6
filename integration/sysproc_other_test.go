//go:build !linux

package integration

import (
	"os"
	"syscall"
)

// Process tests skip outside Linux (see needProcesses); these keep the package compiling there.
func sysProcAttr() *syscall.SysProcAttr { return nil }

func killGroup(pid int, _ syscall.Signal) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Kill()
}
