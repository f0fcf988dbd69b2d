//go:build !linux

package sandbox

// MapMemory is not available here: it returns nil, and linear memories live
// in the Go heap.
func MapMemory(uint64) []byte { return nil }

// UnmapMemory does nothing here: MapMemory makes no mappings.
func UnmapMemory([]byte) {}
