package integration

import (
	"flag"
	"os"
	"strconv"
	"sync"
	"testing"
)

// The tests of this package run in parallel, each with its own servers
// (embedded NATS, Raft nodes, Kafka, processes), its own PostgreSQL
// schema, ClickHouse database, S3 prefix and temporary directories. They
// spend most of their time waiting (leases, ack waits, elections,
// processes starting), not computing, so more of them run at once than
// the machine has cores (go test's default -parallel).
// The tests on the S3 server point the AWS environment at it for the
// whole binary (s3test.SharedEnv, SharedBucket: t.Setenv cannot be used
// in a parallel test). TestCDCFaults, which restarts PostgreSQL, is not
// parallel.
const defaultParallel = 4

// setParallel sets -test.parallel to defaultParallel unless the command
// line set it. TestMain calls it before m.Run.
func setParallel() {
	if !flag.Parsed() {
		flag.Parse()
	}
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set {
		_ = flag.Set("test.parallel", strconv.Itoa(defaultParallel))
	}
}

// contractKey is the key of the data contracts of the contract tests'
// specs (${SLUICE_TEST_CONTRACT_KEY}).
const contractKey = "integration contract key: 32 b."

var contractKeyOnce sync.Once

// setContractKey puts contractKey in SLUICE_TEST_CONTRACT_KEY for the
// rest of the test binary's run (the same value for every test: t.Setenv
// cannot be used in a parallel test) and returns it.
func setContractKey() string {
	contractKeyOnce.Do(func() { os.Setenv("SLUICE_TEST_CONTRACT_KEY", contractKey) })
	return contractKey
}

// slotHolders bounds the tests that hold a PostgreSQL replication slot (a
// cdc pipeline) at once: the shared server has max_replication_slots and
// max_wal_senders of 20 (scripts/services.sh), which the other packages'
// tests use too.
var slotHolders = make(chan struct{}, 5)

// holdSlot waits until fewer than cap(slotHolders) tests of this package
// hold a replication slot, and counts this one until it ends (its slot
// dropped: cleanups run last registered first, so call it before
// cdcSlot or the test's own slot cleanup).
func holdSlot(t *testing.T) {
	t.Helper()
	select {
	case slotHolders <- struct{}{}:
	case <-t.Context().Done():
		return
	}
	t.Cleanup(func() { <-slotHolders })
}
