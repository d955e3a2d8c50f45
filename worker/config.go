package worker

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/sluicehq/sluice/signing"
	"github.com/sluicehq/sluice/telemetry"
)

// Defaults of Config.
const (
	DefaultSlots          = 2
	DefaultProgressEvery  = 5 * time.Second
	DefaultDrainTimeout   = 60 * time.Second
	DefaultHeartbeatEvery = 2 * time.Second
)

// Config configures a Worker. Zero values mean the defaults.
type Config struct {
	// ID names the worker in results and heartbeats; default
	// hostname-pid-<4 random hex digits>.
	ID string
	// Slots is the number of tasks run at once; default 2.
	Slots int
	// ProgressEvery is the interval of in-progress acks sent while a task
	// runs; it must be well below the consumer's AckWait. Default 5s.
	ProgressEvery time.Duration
	// DrainTimeout is how long Run waits for in-flight tasks after its
	// context is cancelled before it cancels them; default 60s.
	DrainTimeout time.Duration
	// HeartbeatEvery is the interval of heartbeats; default 2s.
	HeartbeatEvery time.Duration
	// Verifier checks that the tasks, stream assignments and lease grants
	// the worker receives were signed by the cluster's key; one that was
	// not is refused unread and counted (Worker.Forged). Nil: nothing is
	// checked.
	Verifier *signing.Verifier
	// Metrics, when set, receives the worker's metrics: task attempts,
	// slots, and the lag of the streams it holds. Workers of one process
	// may share one.
	Metrics *telemetry.Metrics
}

// Validate checks the configuration without I/O.
func (c Config) Validate() error {
	var errs []error
	if strings.ContainsFunc(c.ID, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		errs = append(errs, fmt.Errorf("worker id %q: contains a space or control character", c.ID))
	}
	if c.Slots < 0 {
		errs = append(errs, fmt.Errorf("slots: %d is negative", c.Slots))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"progress interval", c.ProgressEvery},
		{"drain timeout", c.DrainTimeout},
		{"heartbeat interval", c.HeartbeatEvery},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s: %v is negative", d.name, d.v))
		}
	}
	return errors.Join(errs...)
}

// withDefaults returns c with every zero value replaced by its default.
func (c Config) withDefaults() Config {
	if c.ID == "" {
		c.ID = defaultID()
	}
	if c.Slots == 0 {
		c.Slots = DefaultSlots
	}
	if c.ProgressEvery == 0 {
		c.ProgressEvery = DefaultProgressEvery
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.HeartbeatEvery == 0 {
		c.HeartbeatEvery = DefaultHeartbeatEvery
	}
	return c
}

func defaultID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "worker"
	}
	var b [2]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}
