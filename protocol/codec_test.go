package protocol

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestTaskRoundTrip(t *testing.T) {
	want := Task{
		RunID: "orders-000001", TaskID: "t00003", Pipeline: "orders", Pattern: PatternFullLoad,
		Source:    Endpoint{Kind: "files", Config: json.RawMessage(`{"path":"/in"}`)},
		Sink:      Endpoint{Kind: "files", Config: json.RawMessage(`{"path":"/out"}`)},
		Partition: Partition{Key: "files[0:4]", Spec: json.RawMessage(`{"files":["a"]}`), Rows: 10, Bytes: 100},
		Enqueue:   1,
		Trace:     map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
		Params:    map[string]string{"file_to_load": "a.jsonl"},
	}
	b, err := Encode(want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode[Task](b)
	if err != nil {
		t.Fatal(err)
	}
	want.V = Version
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
	}
}

func TestResultRoundTrip(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	want := Result{RunID: "r", TaskID: "t", Pipeline: "p", Attempt: 2, Worker: "w1", Rows: 5, Bytes: 50,
		Checksum: 0xff, Location: "/out/_staging/r/t", ErrorClass: ErrorRetryable, Error: "boom", Started: now, Finished: now}
	b, err := Encode(want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode[Result](b)
	if err != nil {
		t.Fatal(err)
	}
	want.V = Version
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
	}
	if !got.Failed() {
		t.Fatal("a result with an error class must report Failed")
	}
}

// A stream assignment carries the pipeline's endpoints and stream
// settings; one without a source, an epoch or a lease is refused.
func TestStreamAssignmentRoundTrip(t *testing.T) {
	want := StreamAssignment{
		Pipeline: "replica", Pattern: PatternCDCApply, Epoch: 3, Revision: 2, Lease: 10 * time.Second,
		Source:   Endpoint{Kind: "cdc", Config: json.RawMessage(`{"pipeline":"shop"}`)},
		Sink:     Endpoint{Kind: "files", Config: json.RawMessage(`{"path":"${OUT}"}`)},
		Settings: StreamSettings{Upstream: "shop"},
	}
	b, err := Encode(want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode[StreamAssignment](b)
	if err != nil {
		t.Fatal(err)
	}
	want.V = Version
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
	}
	for name, edit := range map[string]func(a *StreamAssignment){
		"no source": func(a *StreamAssignment) { a.Source = Endpoint{} },
		"no epoch":  func(a *StreamAssignment) { a.Epoch = 0 },
		"no lease":  func(a *StreamAssignment) { a.Lease = 0 },
	} {
		a := want
		edit(&a)
		b, err := Encode(a)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Decode[StreamAssignment](b); err == nil {
			t.Errorf("%s: decoded %s", name, b)
		}
	}
}

func TestReadyEventRoundTrip(t *testing.T) {
	from := time.Date(2026, 11, 25, 3, 0, 0, 0, time.UTC)
	want := ReadyEvent{Pipeline: "events-ready", Partition: "/data/events/date=2026-11-25/hour=03",
		Window: Window{From: from, To: from.Add(time.Hour)}, Source: "files", Seq: 4, Time: from.Add(70 * time.Minute)}
	b, err := Encode(want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode[ReadyEvent](b)
	want.V = Version
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip: %v\n got %+v\nwant %+v", err, got, want)
	}
	for _, in := range []string{`{"v":1,"partition":"p"}`, `{"v":1,"pipeline":"p"}`} {
		if _, err := Decode[ReadyEvent]([]byte(in)); err == nil {
			t.Errorf("decoded %s", in)
		}
	}
	if got := ReadyMsgID("events-ready", from.In(time.FixedZone("x", 3600))); got != "ready:events-ready:2026-11-25T03:00:00Z" {
		t.Errorf("ReadyMsgID = %q", got)
	}
}

// A checksum travels as 16 hex digits, as it did when it was a string:
// a result from a worker of either form decodes to the same sum, and a
// zero sum (or none) is left out.
func TestResultChecksumJSON(t *testing.T) {
	b, err := json.Marshal(Result{RunID: "r", TaskID: "t", Checksum: 0xff})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"checksum":"00000000000000ff"`) {
		t.Fatalf("encoded %s, want the checksum as 16 hex digits", b)
	}
	for in, want := range map[string]Sum{
		`{"checksum":"00000000000000ff"}`: 0xff,
		`{"checksum":"ffffffffffffffff"}`: 1<<64 - 1,
		`{"checksum":"00ff"}`:             0xff,
		`{"checksum":""}`:                 0,
		`{}`:                              0,
	} {
		var r Result
		if err := json.Unmarshal([]byte(in), &r); err != nil || r.Checksum != want {
			t.Errorf("decode %s: %v, %v; want %v", in, r.Checksum, err, want)
		}
	}
	for _, in := range []string{`{"checksum":"xyz"}`, `{"checksum":"10000000000000000"}`, `{"checksum":255}`} {
		var r Result
		if err := json.Unmarshal([]byte(in), &r); err == nil {
			t.Errorf("decode %s: %v, want an error", in, r.Checksum)
		}
	}
	if b, _ := json.Marshal(Result{}); strings.Contains(string(b), "checksum") {
		t.Errorf("a zero checksum encoded: %s", b)
	}
}

func TestDecodeRejects(t *testing.T) {
	tests := []struct {
		name, in, want string
		version        bool
	}{
		{"no version", `{"run":"r","task":"t","pipeline":"p"}`, `"v" is missing`, true},
		{"future version", `{"v":99,"run":"r","task":"t","pipeline":"p"}`, "version 99, this build speaks 1", true},
		{"not json", `{"v":1,`, "unexpected end", false},
		{"no run", `{"v":1,"task":"t","pipeline":"p"}`, `field "run" is empty`, false},
		{"no task", `{"v":1,"run":"r","pipeline":"p"}`, `field "task" is empty`, false},
		{"wrong type", `{"v":1,"run":5,"task":"t","pipeline":"p"}`, "run", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode[Task]([]byte(tt.in))
			if err == nil {
				t.Fatalf("Decode(%s) succeeded, want error containing %q", tt.in, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
			if errors.Is(err, ErrVersion) != tt.version {
				t.Fatalf("errors.Is(err, ErrVersion) = %v, want %v", !tt.version, tt.version)
			}
		})
	}
}

func TestValidName(t *testing.T) {
	for _, s := range []string{"orders", "a", "orders_v2", "x-1", "0abc"} {
		if !ValidName(s) {
			t.Errorf("ValidName(%q) = false, want true", s)
		}
	}
	for _, s := range []string{"", "Orders", "a.b", "a b", "a>", "*", "-a", strings.Repeat("a", 64)} {
		if ValidName(s) {
			t.Errorf("ValidName(%q) = true, want false", s)
		}
	}
}

func FuzzDecodeTask(f *testing.F) {
	b, _ := Encode(Task{RunID: "r", TaskID: "t", Pipeline: "p"})
	f.Add(b)
	f.Add([]byte(`{"v":1}`))
	f.Add([]byte(`{"v":2,"run":"x"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		task, err := Decode[Task](data)
		if err != nil {
			return
		}
		// Whatever decodes must survive a round trip unchanged.
		again, err := Encode(task)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		back, err := Decode[Task](again)
		if err != nil {
			t.Fatalf("decode of re-encoded task: %v", err)
		}
		if task.RunID != back.RunID || task.TaskID != back.TaskID || task.Pipeline != back.Pipeline {
			t.Fatalf("round trip changed identity: %+v vs %+v", task, back)
		}
	})
}

func FuzzDecodeTrigger(f *testing.F) {
	b, _ := Encode(Trigger{Pipeline: "p", Params: map[string]string{"a": "b"}})
	f.Add(b)
	f.Add([]byte(`{"v":1,"pipeline":"A.B"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tr, err := Decode[Trigger](data)
		if err != nil {
			return
		}
		if tr.Pipeline != "" && !ValidName(tr.Pipeline) {
			t.Fatalf("decoded a trigger with invalid pipeline name %q", tr.Pipeline)
		}
	})
}

func TestParseTrigger(t *testing.T) {
	for _, tc := range []struct {
		in, wantErr string
	}{
		{"", ""},
		{`{}`, ""},
		{`{"params":{"file_to_load":"a.csv"},"logical_time":"2024-05-01T00:00:00Z","event_time":null}`, ""},
		{`{"logical_time":"x"}`, `logical_time: "x" is not RFC 3339`},
		{`{"event_time":5}`, `event_time: 5 is not an RFC 3339 string`},
		{`{"params":{"n":5}}`, `params.n: 5 is not a string`},
		{`{"params":[1]}`, `params: is not an object of strings`},
		{`{"colour":"red"}`, `colour: unknown field`},
		{`[1]`, `payload is not a JSON object`},
	} {
		tr, err := ParseTrigger([]byte(tc.in))
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("ParseTrigger(%s): %v", tc.in, err)
		case tc.wantErr != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.wantErr)):
			t.Errorf("ParseTrigger(%s) = %v, want error starting %q", tc.in, err, tc.wantErr)
		}
		if tc.wantErr == "" && strings.Contains(tc.in, "file_to_load") && (tr.Params["file_to_load"] != "a.csv" || tr.LogicalTime.IsZero()) {
			t.Errorf("ParseTrigger(%s) = %+v", tc.in, tr)
		}
	}
}

func FuzzParseTrigger(f *testing.F) {
	f.Add([]byte(`{"params":{"a":"b"},"logical_time":"2024-05-01T00:00:00Z"}`))
	f.Add([]byte(`{"logical_time":"x"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, err := ParseTrigger(data); err != nil {
			var te *TriggerError
			if !errors.As(err, &te) {
				t.Fatalf("error %v is not a *TriggerError", err)
			}
		}
	})
}

// FuzzDecodeResult: a result is what a worker says it did; whatever
// decodes has a run and a task, and survives a round trip unchanged.
func FuzzDecodeResult(f *testing.F) {
	b, _ := Encode(Result{RunID: "r", TaskID: "t", Pipeline: "p", Attempt: 2, Rows: 10, Bytes: 100, Checksum: 0xdeadbeef,
		Location: "/out/_staging/r/t", Started: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)})
	f.Add(b)
	f.Add([]byte(`{"v":1,"run":"r","task":"t","checksum":""}`))
	f.Add([]byte(`{"v":1,"run":"r","task":"t","checksum":"ffffffffffffffff","error_class":"retryable","error":"x"}`))
	f.Add([]byte(`{"v":1,"run":"r","task":"t","checksum":"1ffffffffffffffff"}`))
	f.Add([]byte(`{"v":1,"run":"r","task":"t","rows":-1,"finished":"2026-01-01T00:00:00Z"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := Decode[Result](data)
		if err != nil {
			return
		}
		if r.RunID == "" || r.TaskID == "" {
			t.Fatalf("decoded a result without its identity: %+v", r)
		}
		again, err := Encode(r)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		back, err := Decode[Result](again)
		if err != nil {
			t.Fatalf("decode of re-encoded result %s: %v", again, err)
		}
		third, err := Encode(back)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if string(third) != string(again) || !r.Started.Equal(back.Started) || !r.Finished.Equal(back.Finished) ||
			r.Checksum != back.Checksum || r.Rows != back.Rows || r.ErrorClass != back.ErrorClass || r.Failed() != back.Failed() {
			t.Fatalf("round trip changed the result:\n%s\n%s", again, third)
		}
	})
}
