//go:build !race

package pgcdc_test

// raceEnabled is false without the race detector.
const raceEnabled = false
