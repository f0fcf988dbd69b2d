//go:build unix

package localpg

import (
	"errors"
	"os"
	"syscall"
)

const supported = true

// procAttr returns the attributes for initdb and postgres: run as ra (when
// we are root) and, for the server (ownGroup), in its own process group so
// that a terminal's Ctrl-C does not reach it before we stop it, and with a
// parent-death signal where the OS has one.
func procAttr(ra *runAs, ownGroup bool) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{}
	if ra != nil {
		a.Credential = &syscall.Credential{Uid: ra.uid, Gid: ra.gid, Groups: []uint32{}}
	}
	if ownGroup {
		a.Setpgid = true
		setPdeathsig(a)
	}
	return a
}

// killGroup sends SIGKILL to the process group led by pid.
func killGroup(pid int) {
	if pid > 0 {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
}

// processAlive reports whether a process with this pid exists.
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// fileOwner returns the owner of fi.
func fileOwner(fi os.FileInfo) (uid, gid uint32, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return st.Uid, st.Gid, true
}
