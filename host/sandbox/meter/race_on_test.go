//go:build race

package meter

// raceEnabled trims the slowest corpus work under the race detector, which
// slows wazero's compiler down by an order of magnitude; this package has
// no concurrency of its own.
const raceEnabled = true
