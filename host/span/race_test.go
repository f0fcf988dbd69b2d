//go:build race

package span

// raceEnabled: the race detector slows the differential tests about tenfold.
const raceEnabled = true
