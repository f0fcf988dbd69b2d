//go:build linux

package sandbox

import "syscall"

// MapMemory reserves size bytes of zeroed memory outside the Go heap, for a
// guest's linear memory: pages cost nothing until the guest touches them,
// and UnmapMemory returns them to the system at once, whatever the garbage
// collector's pace. It returns nil if the system refuses, or where mappings
// are not available (other than Linux): the caller then falls back to the
// Go heap.
func MapMemory(size uint64) []byte {
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

// UnmapMemory releases a mapping made by MapMemory (the whole slice it
// returned).
func UnmapMemory(b []byte) { _ = syscall.Munmap(b) }
