package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sluicehq/sluice/connectors/pgcdc"
	"github.com/sluicehq/sluice/connectors/postgres/pgtest"
	"github.com/sluicehq/sluice/coordinator"
	"github.com/sluicehq/sluice/devcluster"
	"github.com/sluicehq/sluice/protocol"
)

// chromium returns the path of the Chromium binary (SLUICE_TEST_CHROMIUM,
// else chromium on PATH). Without one the test fails in CI and skips
// elsewhere.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("SLUICE_TEST_CHROMIUM"); p != "" {
		return p
	}
	p, err := exec.LookPath("chromium")
	if err != nil {
		msg := "chromium is not installed (apt-get install chromium, or make services; SLUICE_TEST_CHROMIUM names another binary)"
		if os.Getenv("CI") != "" || os.Getenv("SLUICE_CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

// artifacts is where a test writes what a person may want to look at
// after it: $SLUICE_TEST_ARTIFACTS/<test name> if set, else a temporary
// directory.
func artifacts(t *testing.T) string {
	t.Helper()
	root := os.Getenv("SLUICE_TEST_ARTIFACTS")
	if root == "" {
		return t.TempDir()
	}
	dir := filepath.Join(root, t.Name())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// browser starts headless Chromium with a fresh profile and returns a
// chromedp context of one tab; the browser stops when the test ends.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 860))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// The first call starts the browser; it must not carry a timeout.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// page reads what the console shows: the data attributes of the rows of a
// table, as the page set them from the API.
const rowsJS = `[...document.querySelectorAll(%q)].map(tr => ({...tr.dataset}))`

func pageRows(t *testing.T, ctx context.Context, selector string) []map[string]string {
	t.Helper()
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[[]map[string]string](fmt.Sprintf(rowsJS, selector)))
	if err != nil {
		t.Fatalf("read %s: %v", selector, err)
	}
	return rows
}

// show opens a view of the console and waits until the page rendered it
// from a fresh poll.
func show(t *testing.T, ctx context.Context, hash string) {
	t.Helper()
	view, _, _ := strings.Cut(hash, "/")
	js := fmt.Sprintf(`document.body.dataset.loaded = ""; location.hash = %q; true`, hash)
	wait := fmt.Sprintf(`document.body.dataset.loaded === %q`, view)
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := chromedp.Run(tctx, chromedp.Evaluate[bool](js)); err != nil {
		t.Fatalf("open %s: %v", hash, err)
	}
	if _, err := chromedp.Run(tctx, chromedp.Poll[bool](wait, chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		t.Fatalf("the console did not render %s: %v", hash, err)
	}
}

// eventually retries check until it returns nil, for at most d; the page
// polls the API, so what it shows may lag a change by a poll.
func eventually(t *testing.T, d time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func screenshot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", p, len(png))
}

// The web console in a real browser: a dev cluster with the API token
// loads files, streams a PostgreSQL table's changes and backfills three
// days; the console asks for the token, then shows the pipelines, runs
// (state, rows, tasks done), a run's tasks, the workers and their slots,
// the CDC stream with its lag samples, the backfill and a dead letter, each
// the same as sluice status and the API say; replaying the dead letter from
// the page starts a run that commits. Screenshots land in the test's
// artifacts directory.
func TestConsoleInBrowser(t *testing.T) {
	ctx := browser(t)
	shots := artifacts(t)
	dsn, schema, conn := pgtest.DB(t)
	bg := context.Background()
	if _, err := conn.Exec(bg, fmt.Sprintf(`CREATE TABLE %[1]s.orders (id bigint PRIMARY KEY, at timestamptz NOT NULL, amount numeric(12,2));
		INSERT INTO %[1]s.orders SELECT g, timestamptz '2026-01-01 00:00:00+00' + (g %% 72) * interval '1 hour', g * 0.25 FROM generate_series(1, 900) g`, schema)); err != nil {
		t.Fatal(err)
	}
	slot := schema + "_cdc"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := pgcdc.DropSlot(ctx, dsn, slot, slot); err != nil {
			t.Errorf("drop the test's slot: %v", err)
		}
	})
	t.Setenv("SLUICE_CONSOLE_TEST_DSN", dsn)
	root := t.TempDir()
	in := filepath.Join(root, "in")
	if _, err := generateEvents(in, 6000, 6); err != nil {
		t.Fatal(err)
	}
	const token = "console-test-token"
	cctx, cancel := context.WithTimeout(bg, 4*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	err := runLocal(cctx, localConfig{
		Config: devcluster.Config{DataDir: filepath.Join(root, ".sluice"), Workers: 2, Slots: 2,
			Log: log, Tracer: noop.NewTracerProvider(), Registry: newRegistryIn("sluice dev")},
		HTTPAddr: "127.0.0.1:0", APIToken: token,
	}, func(cctx context.Context, l *local) error {
		url := l.NATSURL
		spec := writeSpec(t, root, "pipelines.yaml", fmt.Sprintf(`name: events
pattern: full_load
source: {kind: files, path: %[1]s, format: jsonl}
sink: {kind: files, path: %[2]s, format: jsonl}
partitioning: {max_files: 2}
---
name: orders_daily
pattern: incremental
source: {kind: postgres, dsn: '${SLUICE_CONSOLE_TEST_DSN}', table: %[3]s.orders}
sink: {kind: files, path: %[4]s}
incremental: {delta_column: at, window: 24h, start: 2026-01-01T00:00:00Z}
---
name: orders_cdc
pattern: cdc
source: {kind: postgres, dsn: '${SLUICE_CONSOLE_TEST_DSN}', tables: [%[3]s.orders]}
cdc: {slot: %[5]s, publication: %[5]s, target_rows: 1000, lease: 3s}
`, in, filepath.Join(root, "out"), schema, filepath.Join(root, "daily"), slot))
		if out, _, err := sluice(cctx, "apply", "-f", spec, "--nats", url); err != nil {
			t.Fatalf("apply: %v\n%s", err, out)
		}
		// A trigger of a pipeline that is not there yet is dead-lettered.
		js, err := jetstream.New(l.NC)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := coordinator.PublishTrigger(cctx, js, "later", protocol.Trigger{Params: map[string]string{"k": "v"}}, "evt-1"); err != nil {
			t.Fatal(err)
		}
		if out, _, err := sluice(cctx, "run", "events", "--wait", "--nats", url); err != nil {
			t.Fatalf("run events: %v\n%s", err, out)
		}
		bf, err := l.Client.Backfill(cctx, protocol.BackfillRequest{Pipeline: "orders_daily", Concurrency: 2,
			From: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), To: time.Date(2026, 1, 4, 0, 0, 0, 0, time.UTC)})
		if err != nil {
			t.Fatalf("backfill: %v", err)
		}
		if bf, err = l.Client.WaitBackfill(cctx, bf.ID, 100*time.Millisecond, nil); err != nil || bf.Committed != 3 || bf.Rows != 900 {
			t.Fatalf("backfill %+v: %v; want 3 windows committed, 900 rows", bf, err)
		}
		// Changes after the snapshot stream through the slot.
		for _, q := range []string{"INSERT INTO %[1]s.orders SELECT g, now(), 1 FROM generate_series(1001, 1300) g", "UPDATE %[1]s.orders SET amount = 2 WHERE id > 1200"} {
			if _, err := conn.Exec(bg, fmt.Sprintf(q, schema)); err != nil {
				t.Fatal(err)
			}
		}
		if out, _, err := sluice(cctx, "cdc", "wait", "orders_cdc", "--nats", url); err != nil {
			t.Fatalf("cdc wait: %v\n%s", err, out)
		}
		dead, err := coordinator.ListDLQ(cctx, js, 0)
		if err != nil || len(dead) != 1 || dead[0].Pipeline != "later" {
			t.Fatalf("dead letters %+v, %v; want the trigger of later", dead, err)
		}

		// The console asks for the token, which the API requires.
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`true`)); err != nil {
			t.Fatal(err)
		}
		tctx, tcancel := context.WithTimeout(ctx, 30*time.Second)
		if err := chromedp.Do(tctx, chromedp.Navigate(l.HTTPURL+"/"), chromedp.WaitVisible("#login"),
			chromedp.SendKeys("#token", token), chromedp.Click(`#login button`), chromedp.WaitVisible("#pipelines")); err != nil {
			t.Fatalf("sign in: %v", err)
		}
		tcancel()
		show(t, ctx, "overview")

		status := func() protocol.StatusReply {
			t.Helper()
			out, _, err := sluice(cctx, "status", "-o", "json", "--limit", "50", "--nats", url)
			var st protocol.StatusReply
			if err != nil || json.Unmarshal([]byte(out), &st) != nil {
				t.Fatalf("sluice status -o json: %v\n%s", err, out)
			}
			return st
		}
		st := status()
		var wantPipes []map[string]string
		for _, p := range st.Pipelines {
			wantPipes = append(wantPipes, map[string]string{"pipeline": p.Name, "version": fmt.Sprint(p.Version)})
		}
		if got := pageRows(t, ctx, "#pipelines tbody tr[data-pipeline]"); !reflect.DeepEqual(got, wantPipes) || len(got) != 3 {
			t.Errorf("pipelines on the page %v; sluice status says %v", got, wantPipes)
		}
		var wantWorkers []map[string]string
		for _, w := range st.Workers {
			wantWorkers = append(wantWorkers, map[string]string{"worker": w.Worker, "slots": fmt.Sprint(w.Slots)})
		}
		eventually(t, 10*time.Second, "workers on the page", func() error {
			var got []map[string]string
			for _, r := range pageRows(t, ctx, "#workers tbody tr[data-worker]") {
				got = append(got, map[string]string{"worker": r["worker"], "slots": r["slots"]})
			}
			if !reflect.DeepEqual(got, wantWorkers) || len(got) != 2 {
				return fmt.Errorf("%v; sluice status says %v", got, wantWorkers)
			}
			return nil
		})
		if got := pageRows(t, ctx, "#nodes tbody tr[data-node]"); len(got) != 1 || got[0]["node"] != st.Leader {
			t.Errorf("coordinators on the page %v; want the leader %s", got, st.Leader)
		}
		screenshot(t, ctx, shots, "overview.png")

		// Runs: state, rows and tasks as sluice status says.
		show(t, ctx, "runs")
		runRow := func(r protocol.RunStatus) map[string]string {
			return map[string]string{"run": r.RunID, "pipeline": r.Pipeline, "state": r.State, "rows": fmt.Sprint(r.Rows),
				"tasks": fmt.Sprint(r.Tasks), "done": fmt.Sprint(r.TasksDone), "failed": fmt.Sprint(r.TasksFailed)}
		}
		var eventsRun protocol.RunStatus
		eventually(t, 10*time.Second, "runs on the page", func() error {
			st := status()
			var want []map[string]string
			for _, r := range st.Runs {
				want = append(want, runRow(r))
				if r.Pipeline == "events" {
					eventsRun = r
				}
			}
			if got := pageRows(t, ctx, "#runlist tbody tr[data-run]"); !reflect.DeepEqual(got, want) {
				return fmt.Errorf("%v; sluice status says %v", got, want)
			}
			return nil
		})
		if eventsRun.State != protocol.RunCommitted || eventsRun.Rows != 6000 || eventsRun.TasksDone != 3 {
			t.Fatalf("the events run %+v; want committed, 6000 rows, 3 tasks", eventsRun)
		}
		// A run's tasks: one row per task, the rows adding up.
		if err := chromedp.Do(ctx, chromedp.Click(fmt.Sprintf(`#runlist tr[data-run=%q]`, eventsRun.RunID))); err != nil {
			t.Fatal(err)
		}
		show(t, ctx, "runs/"+eventsRun.RunID)
		full, err := l.Client.GetRun(cctx, eventsRun.RunID)
		if err != nil {
			t.Fatal(err)
		}
		var wantTasks []map[string]string
		for _, ts := range full.TaskList {
			wantTasks = append(wantTasks, map[string]string{"task": ts.TaskID, "state": ts.State, "rows": fmt.Sprint(ts.Rows)})
		}
		gotTasks := pageRows(t, ctx, "#tasks tbody tr[data-task]")
		var sum int64
		for _, r := range gotTasks {
			var n int64
			fmt.Sscan(r["rows"], &n)
			sum += n
		}
		if !reflect.DeepEqual(gotTasks, wantTasks) || len(gotTasks) != 3 || sum != 6000 {
			t.Errorf("tasks on the page %v (%d rows); the API says %v", gotTasks, sum, wantTasks)
		}
		screenshot(t, ctx, shots, "runs.png")

		// CDC: the stream, its holder and lag samples (the API node
		// samples every 10s).
		show(t, ctx, "cdc")
		cdc, err := l.Client.CDCStatus(cctx)
		if err != nil || len(cdc.Streams) != 1 {
			t.Fatalf("cdc status %+v: %v", cdc, err)
		}
		eventually(t, 40*time.Second, "the cdc stream on the page", func() error {
			rows := pageRows(t, ctx, "#streams tbody tr[data-pipeline]")
			if len(rows) != 1 || rows[0]["pipeline"] != "orders_cdc" || rows[0]["phase"] != cdc.Streams[0].Phase || rows[0]["worker"] != cdc.Streams[0].Worker {
				return fmt.Errorf("%v; the API says %+v", rows, cdc.Streams[0])
			}
			n, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("#streams svg.spark").dataset.samples`))
			if err != nil || n == "0" {
				return fmt.Errorf("no lag samples charted yet (%q, %v)", n, err)
			}
			return nil
		})
		screenshot(t, ctx, shots, "cdc.png")

		// Backfills.
		show(t, ctx, "backfills")
		want := []map[string]string{{"backfill": bf.ID, "pipeline": "orders_daily", "state": bf.State, "total": "3", "committed": "3", "rows": "900"}}
		if got := pageRows(t, ctx, "#backfilllist tbody tr[data-backfill]"); !reflect.DeepEqual(got, want) {
			t.Errorf("backfills on the page %v; want %v", got, want)
		}

		// The dead letter, replayed from the page once the pipeline exists.
		show(t, ctx, "dlq")
		wantDead := []map[string]string{{"seq": fmt.Sprint(dead[0].Seq), "kind": "trigger", "pipeline": "later"}}
		if got := pageRows(t, ctx, "#deadletters tbody tr[data-seq]"); !reflect.DeepEqual(got, wantDead) {
			t.Errorf("dead letters on the page %v; want %v", got, wantDead)
		}
		screenshot(t, ctx, shots, "dlq.png")
		later := writeSpec(t, root, "later.yaml", filesSpec("later", in, filepath.Join(root, "later")))
		if out, _, err := sluice(cctx, "apply", "-f", later, "--nats", url); err != nil {
			t.Fatalf("apply later: %v\n%s", err, out)
		}
		if err := chromedp.Do(ctx, chromedp.Click(fmt.Sprintf(`#deadletters tr[data-seq="%d"] button.replay`, dead[0].Seq))); err != nil {
			t.Fatal(err)
		}
		var replayed protocol.RunStatus
		eventually(t, time.Minute, "the replayed trigger's run", func() error {
			st, err := l.Client.Status(cctx, protocol.StatusRequest{Pipeline: "later"})
			if err != nil {
				return err
			}
			if len(st.Runs) != 1 || st.Runs[0].State != protocol.RunCommitted {
				return fmt.Errorf("runs of later %+v; want one committed", st.Runs)
			}
			replayed = st.Runs[0]
			return nil
		})
		if replayed.Rows != 6000 || replayed.Trigger == nil || replayed.Trigger.MsgID != fmt.Sprintf("replay:%d", dead[0].Seq) {
			t.Errorf("replayed run %+v; want 6000 rows from msg id replay:%d", replayed, dead[0].Seq)
		}
		msg, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("dlq-result").textContent`))
		if err != nil || !strings.Contains(msg, "re-published on sluice.trigger.later") {
			t.Errorf("replay result on the page %q, %v", msg, err)
		}
		show(t, ctx, "runs")
		eventually(t, 10*time.Second, "the replayed run on the page", func() error {
			rows := pageRows(t, ctx, "#runlist tbody tr[data-pipeline=later]")
			if len(rows) != 1 || !reflect.DeepEqual(rows[0], runRow(replayed)) {
				return fmt.Errorf("%v; want %v", rows, runRow(replayed))
			}
			return nil
		})
		if errs := consoleErrors(t, ctx); len(errs) > 0 {
			t.Errorf("the page showed errors: %v", errs)
		}
		for _, p := range []string{"orders_cdc"} {
			if _, _, err := sluice(cctx, "delete", p, "--nats", url); err != nil {
				t.Errorf("delete %s: %v", p, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// consoleErrors returns the error the page shows, if any.
func consoleErrors(t *testing.T, ctx context.Context) []string {
	t.Helper()
	errs, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#error:not([hidden])")].map(e => e.textContent)`))
	if err != nil {
		t.Fatal(err)
	}
	return slices.DeleteFunc(errs, func(s string) bool { return s == "" })
}
