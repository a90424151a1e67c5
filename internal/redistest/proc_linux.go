package redistest

import "syscall"

// sysProcAttr has the kernel kill the server if the test process dies
// before its cleanup could.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
