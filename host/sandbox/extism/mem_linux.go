//go:build linux

package extism

import "syscall"

// mapMemory reserves size bytes of zeroed memory outside the Go heap: pages
// cost nothing until the guest touches them, and unmapMemory returns them to
// the system at once, whatever the garbage collector's pace. It returns nil
// if the system refuses (the caller falls back to the Go heap).
func mapMemory(size uint64) []byte {
	if size == 0 || size > 1<<40 {
		return nil
	}
	b, err := syscall.Mmap(-1, 0, int(size), syscall.PROT_READ|syscall.PROT_WRITE,
		syscall.MAP_PRIVATE|syscall.MAP_ANON|syscall.MAP_NORESERVE)
	if err != nil {
		return nil
	}
	return b
}

// unmapMemory releases a mapping made by mapMemory (the whole slice it
// returned).
func unmapMemory(b []byte) { _ = syscall.Munmap(b) }
