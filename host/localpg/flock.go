//go:build unix && !solaris && !illumos && !aix

package localpg

import (
	"os"
	"syscall"
)

// tryLock takes an exclusive flock on f without blocking. The lock lives as
// long as f is open, i.e. at most as long as our process.
func tryLock(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}
