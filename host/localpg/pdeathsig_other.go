//go:build unix && !linux

package localpg

import "syscall"

// setPdeathsig is a no-op outside Linux, where a server whose parent died
// without calling Stop keeps running until it is stopped by hand.
func setPdeathsig(*syscall.SysProcAttr) {}
