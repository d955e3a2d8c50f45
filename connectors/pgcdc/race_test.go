//go:build race

package pgcdc_test

// raceEnabled scales down the tests whose cost is per event: the race
// detector slows the embedded NATS server and the Reader about fivefold.
const raceEnabled = true
