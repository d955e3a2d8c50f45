package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/files"
	"github.com/sluicehq/sluice/contract"
	"github.com/sluicehq/sluice/protocol"
)

// TestContractAppliedBetweenReadAndWrite: a task carrying a data contract
// writes only what the contract makes of the rows (hashed, masked,
// dropped, filtered); a task meeting a column the strict contract does
// not classify fails permanently, naming the column and not its values,
// and stages nothing of it; the sink is opened with the contract's schema.
func TestContractAppliedBetweenReadAndWrite(t *testing.T) {
	const key = "worker test contract key, 32 b"
	t.Setenv("SLUICE_TEST_CONTRACT_KEY", key)
	e := newEnv(t)
	files.Register(e.reg)
	e.createStreams(30 * time.Second)

	in, bad, out := t.TempDir(), t.TempDir(), t.TempDir()
	rows := `{"id":1,"email":"alice@example.com","name":"Alice","country":"DE"}
{"id":2,"email":"bob@example.com","name":"Bob","country":"US"}
{"id":3,"email":"carol@example.com","name":"Carol","country":"FR"}
`
	if err := os.WriteFile(filepath.Join(in, "people.jsonl"), []byte(rows), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bad, "people.jsonl"), []byte(`{"id":4,"email":"dave@example.com","ssn":"123-45-6789","country":"DE"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec, problems := contract.Parse([]byte(`strict: true
key: ${SLUICE_TEST_CONTRACT_KEY}
columns:
  id: keep
  email: {pii: email, action: hash}
  name: {pii: name, action: drop}
  country: keep
filter:
  - {column: country, not_equals: US}
`))
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	ct, err := spec.JSON()
	if err != nil {
		t.Fatal(err)
	}
	sinkCfg := json.RawMessage(fmt.Sprintf(`{"path":%q,"format":"jsonl"}`, out))
	ctx := context.Background()
	for i, dir := range []string{in, bad} {
		srcCfg := json.RawMessage(fmt.Sprintf(`{"path":%q,"format":"jsonl"}`, dir))
		src, err := e.reg.OpenSource(ctx, files.Kind, srcCfg)
		if err != nil {
			t.Fatal(err)
		}
		plan, err := src.Plan(ctx, connectors.PlanRequest{RunID: fmt.Sprintf("r%d", i), Pipeline: "p"})
		src.Close()
		if err != nil || len(plan.Partitions) != 1 {
			t.Fatalf("plan: %v, %d partitions", err, len(plan.Partitions))
		}
		e.publishTask(protocol.Task{
			RunID: fmt.Sprintf("r%d", i), TaskID: "t000", Pipeline: "p", Pattern: protocol.PatternFullLoad,
			Source: protocol.Endpoint{Kind: files.Kind, Config: srcCfg}, Sink: protocol.Endpoint{Kind: files.Kind, Config: sinkCfg},
			Partition: plan.Partitions[0], Enqueue: 1, Contract: ct, MaxAttempts: 1,
		}, nil)
	}
	r := e.start(fastConfig(2), nil)
	e.waitResults(2)
	e.waitTasksGone()
	r.stop(t)

	var staged []connectors.TaskOutput
	for _, res := range e.results() {
		switch res.RunID {
		case "r0":
			if res.Failed() || res.Rows != 2 {
				t.Fatalf("r0: %+v", res)
			}
			staged = append(staged, connectors.TaskOutput{Rows: res.Rows, Bytes: res.Bytes, Checksum: connectors.Checksum{Sum: uint64(res.Checksum), Rows: res.Rows}, Location: res.Location})
		case "r1":
			if res.ErrorClass != protocol.ErrorPermanent || !strings.Contains(res.Error, `"ssn"`) || strings.Contains(res.Error, "123-45-6789") || strings.Contains(res.Error, "dave") {
				t.Fatalf("r1: %+v, want a permanent failure naming ssn and no value", res)
			}
		}
	}
	sink, err := e.reg.OpenSink(ctx, files.Kind, sinkCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	if _, err := sink.Commit(ctx, connectors.CommitRequest{RunID: "r0", Pipeline: "p", Version: 1, Tasks: staged}); err != nil {
		t.Fatal(err)
	}
	// Every file under the sink's path: the version and any staging.
	var got []string
	err = filepath.WalkDir(out, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".jsonl") {
			return err
		}
		b, err := os.ReadFile(path)
		got = append(got, string(b))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(got, "")
	for _, pii := range []string{"alice@example.com", "Alice", "bob", "Carol", "carol@example.com", "123-45-6789", "dave"} {
		if strings.Contains(all, pii) {
			t.Fatalf("the sink's files hold %q:\n%s", pii, all)
		}
	}
	if !strings.Contains(all, contract.HashValue([]byte(key), "alice@example.com")) || strings.Count(all, "\n") != 2 {
		t.Fatalf("output:\n%s", all)
	}
}

// TestContractSchemaReachesWriter: the sink is opened with the schema of
// the rows the contract makes.
func TestContractSchemaReachesWriter(t *testing.T) {
	e := newEnv(t)
	e.createStreams(30 * time.Second)
	task := e.task(1)
	task.Schema = &protocol.Schema{Columns: []protocol.Column{{Name: "part", Type: protocol.TypeInt32, NotNull: true},
		{Name: "amount", Type: protocol.TypeDecimal, Precision: 38, Scale: 10}, {Name: "secret", Type: protocol.TypeString}}, Key: []string{"part"}}
	task.Contract = json.RawMessage(`{"columns":{"part":{"action":"keep"},"amount":{"action":"mask"},"secret":{"action":"drop"}}}`)
	e.publishTask(task, nil)
	r := e.start(fastConfig(1), nil)
	e.waitResults(1)
	r.stop(t)
	refs := e.conn.opened()
	if len(refs) != 1 {
		t.Fatalf("%d task writers opened", len(refs))
	}
	s := refs[0].Schema
	if len(s.Columns) != 2 || s.Columns[1].Type != protocol.TypeString || refs[0].Contract != nil {
		t.Fatalf("task writer opened with %+v", refs[0])
	}
}
