//go:build !linux

package extism

// mapMemory is not available here: linear memories live in the Go heap.
func mapMemory(uint64) []byte { return nil }

func unmapMemory([]byte) {}
