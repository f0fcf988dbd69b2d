//go:build race && !wasip1

package logline_test

const raceEnabled = true
