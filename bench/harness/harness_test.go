package harness

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
)

func TestSmokeKeepsGivenFlagsAndNeverWritesResults(t *testing.T) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	rows := fs.Int("rows", 2_000_000, "")
	reps := fs.Int("reps", 3, "")
	out := fs.String("out", "bench/results/x.json", "")
	if err := fs.Parse([]string{"--rows", "5"}); err != nil {
		t.Fatal(err)
	}
	if err := Smoke(fs, "x", map[string]string{"rows": "20000", "reps": "1"}); err != nil {
		t.Fatal(err)
	}
	if *rows != 5 || *reps != 1 {
		t.Errorf("rows %d, reps %d; want 5 (given) and 1 (smoke)", *rows, *reps)
	}
	if want := filepath.Join(os.TempDir(), "sluice-bench-smoke", "x.json"); *out != want {
		t.Errorf("out %s, want %s", *out, want)
	}

	// An --out given on the command line stays.
	fs = flag.NewFlagSet("bench", flag.ContinueOnError)
	out = fs.String("out", "bench/results/x.json", "")
	if err := fs.Parse([]string{"--out", "elsewhere.json"}); err != nil {
		t.Fatal(err)
	}
	if err := Smoke(fs, "x", map[string]string{}); err != nil {
		t.Fatal(err)
	}
	if *out != "elsewhere.json" {
		t.Errorf("out %s, want elsewhere.json", *out)
	}

	if err := Smoke(fs, "x", map[string]string{"nosuch": "1"}); err == nil {
		t.Error("a smoke value of an unknown flag: no error")
	}
}

func TestCheckSchema(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"sluice_bench", true},
		{"sluice_bench_smoke_cdc", true},
		{"sluice_bench_" + strings.Repeat("x", 27), true},
		{"sluice_bench_" + strings.Repeat("x", 28), false},
		{"public", false},
		{"Sluice_bench", false},
		{"sluice_bench; drop schema public", false},
		{"sluice_bench-x", false},
		{"", false},
	} {
		if err := CheckSchema(tc.name); (err == nil) != tc.ok {
			t.Errorf("CheckSchema(%q) = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}

func TestLockWaitsForTheHolder(t *testing.T) {
	dsn, name, first := pgtest.DB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	connect := func() *pgx.Conn {
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		return c
	}
	if err := Lock(ctx, first, name, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	var said bytes.Buffer
	locked := make(chan error, 1)
	second := connect()
	go func() { locked <- Lock(ctx, second, name, &said) }()
	select {
	case err := <-locked:
		t.Fatalf("a second run took the lock while the first held it (err %v)", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := Lock(ctx, connect(), name+"_other", &bytes.Buffer{}); err != nil {
		t.Fatalf("a run on another name: %v", err)
	}
	// The first run ends (as its connection closing would).
	if _, err := first.Exec(ctx, "SELECT pg_advisory_unlock_all()"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-locked:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the second run still waits after the first let go")
	}
	if !strings.Contains(said.String(), "waiting for another benchmark run on "+name) {
		t.Errorf("the waiting run said %q", said.String())
	}
}
