//go:build !unix

package localpg

import (
	"os"
	"syscall"
)

const supported = false

func procAttr(*runAs, bool) *syscall.SysProcAttr { return nil }

func killGroup(pid int) {
	if p, err := os.FindProcess(pid); err == nil {
		_ = p.Kill()
	}
}

func processAlive(int) bool { return false }

func fileOwner(os.FileInfo) (uid, gid uint32, ok bool) { return 0, 0, false }
