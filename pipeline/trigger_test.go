package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/connectors"
)

// triggerRegistry has a source and a sink "dir", and a kind "bus" that
// delivers events for triggers (with a required field "topic").
func triggerRegistry() *connectors.Registry {
	reg := connectors.NewRegistry()
	reg.Register(connectors.Connector{Kind: "dir",
		Source: func(context.Context, json.RawMessage) (connectors.Source, error) { return nil, nil },
		Sink:   func(context.Context, json.RawMessage) (connectors.Sink, error) { return nil, nil }})
	reg.Register(connectors.Connector{Kind: "bus", Feed: &connectors.EventFeed{
		Open: func(context.Context, json.RawMessage, string) (connectors.Feed, error) { return nil, nil },
		Validate: func(raw json.RawMessage) error {
			if !strings.Contains(string(raw), "topic") {
				return &connectors.FieldError{Field: "topic", Msg: "is required"}
			}
			return nil
		}}})
	return reg
}

const triggerHead = "name: a\npattern: full_load\nsource: {kind: dir}\nsink: {kind: dir}\n"

func TestLoadExternalTrigger(t *testing.T) {
	reg := triggerRegistry()
	in := triggerHead + `trigger:
  subject: s3.events.uploads
  filter:
    eventName: ObjectCreated:Put
    Records.0.s3.object.key: {prefix: landing/, suffix: .jsonl}
  params:
    file: {field: Records.0.s3.object.key, regex: "^landing/(.*)$"}
    size: Records.0.s3.object.size
  id: Records.0.s3.object.eTag
  event_time: Records.0.eventTime
`
	s, err := Load([]byte(in), "a.yaml", reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := s.Trigger
	if !tr.External() || tr.Subject != "s3.events.uploads" || len(tr.Filter) != 2 || tr.Params["file"].Regex == "" {
		t.Fatalf("trigger %+v", tr)
	}
	payload := `{"Records":[{"eventTime":"2026-11-25T10:00:00Z","eventName":"x","s3":{"object":{"key":"landing/a/b.jsonl","size":1200,"eTag":"e1"}}}],"eventName":"ObjectCreated:Put"}`
	ev, err := tr.Evaluate([]byte(payload))
	if err != nil || !ev.Matched || ev.Params["file"] != "a/b.jsonl" || ev.Params["size"] != "1200" || ev.ID != "e1" ||
		!ev.Time.Equal(time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)) {
		t.Fatalf("evaluate: %+v, %v", ev, err)
	}
	for _, p := range []string{
		strings.Replace(payload, "ObjectCreated:Put", "ObjectRemoved:Delete", 1),
		strings.Replace(payload, "b.jsonl", "b.csv", 1),
		`{"unrelated":true}`,
	} {
		if ev, err := tr.Evaluate([]byte(p)); err != nil || ev.Matched {
			t.Errorf("%s: matched %v, %v; want filtered out", p, ev.Matched, err)
		}
	}
	for _, bad := range []string{`not json`, strings.Replace(payload, `"eTag":"e1"`, `"etag":"e1"`, 1), strings.Replace(payload, "landing/a", "other/landing/a", 1)} {
		if _, err := tr.Evaluate([]byte(bad)); err == nil && !strings.Contains(bad, "other/") {
			t.Errorf("%s: no error, want one naming the field", bad)
		}
	}

	feed := triggerHead + "trigger:\n  bus: {topic: uploads}\n  params: {file: key}\n"
	s, err = Load([]byte(feed), "a.yaml", reg, nil)
	if err != nil || s.Trigger.Feed == nil || s.Trigger.Feed.Kind != "bus" {
		t.Fatalf("feed trigger: %+v, %v", s.Trigger, err)
	}

	tests := []struct{ name, trigger, want string }{
		{"subject and after", "trigger: {after: b, subject: x.y}", "trigger: give one of after, subject or a connector kind"},
		{"sluice's subject", "trigger: {subject: sluice.trigger.a}", "trigger.subject: \"sluice.trigger.a\" is a subject Sluice or NATS uses itself"},
		{"bad subject", "trigger: {subject: 'a..b'}", "trigger.subject: \"a..b\" is not a NATS subject"},
		{"bad wildcard", "trigger: {subject: 'a.>.b'}", "'>' only last"},
		{"unknown kind", "trigger:\n  nope: {x: 1}", "line 6: trigger.nope: unknown field: not one of after, subject, filter, params, id, event_time, nor a connector kind whose events start runs (kinds that have them: [bus])"},
		{"feed config", "trigger:\n  bus: {x: 1}", "trigger.bus.topic: is required"},
		{"filter without events", "trigger:\n  after: b\n  filter: {a: b}", "trigger: filter, params, id and event_time read the payloads"},
		{"bad regex", "trigger:\n  subject: a.b\n  params: {file: {field: k, regex: '('}}", "trigger.params.file.regex: error parsing regexp"},
		{"two groups", "trigger:\n  subject: a.b\n  params: {file: {field: k, regex: '(a)(b)'}}", "trigger.params.file.regex: has more than one group"},
		{"bad field", "trigger:\n  subject: a.b\n  params: {file: 'a..b'}", "trigger.params.file: \"a..b\" is not a payload field"},
		{"unknown condition", "trigger:\n  subject: a.b\n  filter: {a: {like: x}}", "trigger.filter.a.like: unknown condition"},
	}
	for _, tc := range tests {
		_, err := Load([]byte(triggerHead+tc.trigger+"\n"), "a.yaml", reg, nil)
		var pe *Error
		if !errors.As(err, &pe) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

func FuzzEvaluate(f *testing.F) {
	f.Add([]byte(`{"Records":[{"s3":{"object":{"key":"landing/a.jsonl"}}}]}`))
	f.Add([]byte(`[1,2,{"a":null}]`))
	f.Add([]byte(`"x"`))
	tr := &Trigger{Subject: "a.b", Filter: map[string]Match{"Records.0.s3.object.key": {Prefix: "landing/"}},
		Params: map[string]ParamField{"file": {Field: "Records.0.s3.object.key", Regex: "^landing/(.*)$"}}, ID: "Records.0.s3.object.key"}
	f.Fuzz(func(t *testing.T, payload []byte) {
		ev, err := tr.Evaluate(payload)
		if err == nil && ev.Matched && !strings.HasPrefix("landing/"+ev.Params["file"], "landing/") {
			t.Fatalf("params %v from a filtered payload", ev.Params)
		}
	})
}
