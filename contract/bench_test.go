package contract_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/sluicehq/sluice/bench/harness"
	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/files"
	"github.com/sluicehq/sluice/connectors/postgres"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/contract"
)

// overheadContract hashes three and masks two of the seven columns of the
// benchmark table (bench/harness.Orders).
const overheadContract = `key: ${SLUICE_BENCH_CONTRACT_KEY}
columns:
  id: keep
  customer: {pii: name, action: hash}
  created_at: {action: hash}
  status: {action: hash}
  amount: {action: mask}
  quantity: {action: mask}
  paid: keep
`

// ordersCSV returns n rows shaped like bench/harness.Orders', as a
// PostgreSQL source's CSV batch.
func ordersCSV(n int) []byte {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		customer := fmt.Sprintf("customer %012x", i*2654435761)
		if i%10 == 0 {
			customer = `"Smith, ` + customer + `"`
		}
		qty := fmt.Sprint(i * 7 % 1000)
		if i%50 == 0 {
			qty = ""
		}
		fmt.Fprintf(&b, "%d,%s,%d.%02d,2024-01-%02d 10:%02d:%02d.123457+00,%s,%s,%s\n", i, customer, i%100000, i%97, 1+i%28, i%60, i%60, qty,
			map[bool]string{true: "t", false: "f"}[i%3 == 0], []string{"new", "paid", "shipped", "returned", "cancelled"}[i%5])
	}
	return []byte(b.String())
}

type discard struct{ rows int64 }

func (d *discard) Write(_ context.Context, b connectors.Batch) error { d.rows += b.Rows; return nil }
func (d *discard) Close(context.Context) (connectors.TaskOutput, error) {
	return connectors.TaskOutput{Rows: d.rows}, nil
}
func (d *discard) Abort(context.Context) error { return nil }

// BenchmarkWriterCSV is the contract's own cost: 3 hashed and 2 masked
// columns of 7, on CSV batches of 10,000 rows (about 1 MiB, as a
// PostgreSQL source's), beside the same batches passed through.
func BenchmarkWriterCSV(b *testing.B) {
	const rows = 10_000
	raw := ordersCSV(rows)
	cols := []string{"id", "customer", "amount", "created_at", "quantity", "paid", "status"}
	for _, tc := range []struct {
		name string
		y    string
	}{{"passthrough", "columns: {id: keep}\n"}, {"3hash2mask", overheadContract}} {
		b.Run(tc.name, func(b *testing.B) {
			spec, problems := contract.Parse([]byte(tc.y))
			if len(problems) > 0 {
				b.Fatal(problems)
			}
			c, err := contract.Compile(spec, func(string) (string, bool) { return "benchmark contract key, 32 byte", true })
			if err != nil {
				b.Fatal(err)
			}
			w, err := c.Writer(&discard{})
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			cpu0 := cpuTime()
			for b.Loop() {
				if err := w.Write(context.Background(), connectors.Batch{Raw: raw, Format: connectors.FormatCSV, Columns: cols, Rows: rows}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(rows)/float64(b.N), "cpu-ns/row")
		})
	}
}

// BenchmarkContractOverhead times full loads of the benchmark table
// (500,000 rows; SLUICE_BENCH_ROWS for another size) from PostgreSQL into
// CSV files and into a PostgreSQL table, in process as a worker runs them
// (8 chunks, 4 at a time: 2 workers x 2 slots), with and without a
// contract of 3 hashed and 2 masked columns, interleaved: the loads
// without it are the passthrough rate, which the contract may cost at
// most 25% of. rows/s is the load's; cpu-s the CPU time of this process
// per load (PostgreSQL's not counted). Run it with
//
//	go test -run '^$' -bench ContractOverhead -benchtime 3x ./contract
func BenchmarkContractOverhead(b *testing.B) {
	rows := int64(500_000)
	if v, err := strconv.ParseInt(os.Getenv("SLUICE_BENCH_ROWS"), 10, 64); err == nil && v > 0 {
		rows = v
	}
	b.Setenv("SLUICE_BENCH_CONTRACT_KEY", "benchmark contract key, 32 byte")
	dsn, schema, conn := pgtest.DB(b)
	ctx := context.Background()
	if err := harness.Orders(ctx, conn, schema, "orders", rows, io.Discard); err != nil {
		b.Fatal(err)
	}
	spec, problems := contract.Parse([]byte(overheadContract))
	if len(problems) > 0 {
		b.Fatal(problems)
	}
	ct, err := contract.Compile(spec, os.LookupEnv)
	if err != nil {
		b.Fatal(err)
	}
	out := b.TempDir()
	// Each variant has a target of its own: the contract changes the
	// columns' types.
	sinks := []struct {
		name string
		open func(variant string) (connectors.Sink, error)
	}{
		{"csv", func(variant string) (connectors.Sink, error) {
			return files.NewSink(files.SinkConfig{Path: out + "/" + variant, Format: "csv", KeepVersions: 1})
		}},
		{"pg", func(variant string) (connectors.Sink, error) {
			return postgres.NewSink(postgres.SinkConfig{DSN: dsn, Table: schema + ".orders_" + variant, KeepVersions: 1})
		}},
	}
	version := int64(0)
	for _, s := range sinks {
		for _, with := range []*contract.Contract{nil, ct} {
			variant := "passthrough"
			if with != nil {
				variant = "3hash2mask"
			}
			b.Run(s.name+"/"+variant, func(b *testing.B) {
				var cpu time.Duration
				for b.Loop() {
					version++
					sink, err := s.open(variant)
					if err != nil {
						b.Fatal(err)
					}
					cpu0 := cpuTime()
					err = load(ctx, dsn, schema+".orders", rows, sink, with, version)
					cpu += cpuTime() - cpu0
					sink.Close()
					if err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
				b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s")
			})
		}
	}
}

// load runs one full load of table into sink, through c when it is not
// nil, and commits it as version.
func load(ctx context.Context, dsn, table string, rows int64, sink connectors.Sink, c *contract.Contract, version int64) error {
	src, err := postgres.NewSource(postgres.SourceConfig{DSN: dsn, Table: table})
	if err != nil {
		return err
	}
	defer src.Close()
	runID := fmt.Sprintf("overhead-%d", version)
	plan, err := src.Plan(ctx, connectors.PlanRequest{RunID: runID, Partitioning: connectors.Partitioning{TargetRows: rows / 8}})
	if err != nil {
		return err
	}
	defer src.ReleaseRun(runID)
	schema := plan.Schema
	if c != nil {
		if schema, err = c.Spec().Schema(plan.Schema); err != nil {
			return err
		}
	}
	outs := make([]connectors.TaskOutput, len(plan.Partitions))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for i, p := range plan.Partitions {
		g.Go(func() error {
			w, err := sink.OpenTask(gctx, connectors.TaskRef{RunID: runID, TaskID: fmt.Sprintf("t%05d", i), Attempt: 1, Schema: schema})
			if err != nil {
				return err
			}
			if c != nil {
				if w, err = c.Writer(w); err != nil {
					return err
				}
			}
			if err := src.Read(gctx, p, w.Write); err != nil {
				w.Abort(gctx)
				return err
			}
			outs[i], err = w.Close(gctx)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	var n int64
	for _, o := range outs {
		n += o.Rows
	}
	if n != rows {
		return fmt.Errorf("loaded %d rows of %d", n, rows)
	}
	_, err = sink.Commit(ctx, connectors.CommitRequest{RunID: runID, Version: version, Tasks: outs, Schema: schema})
	return err
}

// cpuTime is the CPU time this process used so far (user and system).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
