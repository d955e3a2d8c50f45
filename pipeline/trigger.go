package pipeline

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// Trigger is the trigger section of a spec: what starts runs besides a
// message on the pipeline's own trigger subject (sluice.trigger.<name>).
// At most one of After, Subject and Feed is set.
type Trigger struct {
	// After names the upstream pipeline: each committed run of it starts
	// one run of this pipeline, whose trigger context names the upstream
	// run, its dataset location and version.
	After string `json:"after,omitempty"`
	// Subject is any NATS subject (a foreign one: S3 event notifications
	// relayed to NATS, another system's events): each message published
	// on it is an event that may start a run.
	Subject string `json:"subject,omitempty"`
	// Feed is a connector that delivers events (trigger: {<kind>:
	// {...}}): a Kafka topic.
	Feed *protocol.Endpoint `json:"feed,omitempty"`
	// Filter selects the events that start a run: every field path must
	// match. An event that does not is counted and ignored.
	Filter map[string]Match `json:"filter,omitempty"`
	// Params maps run parameters to fields of the event's payload: the
	// run's parameters (connectors.ParamFile, ...), checked against the
	// pipeline's source before the run is created.
	Params map[string]ParamField `json:"params,omitempty"`
	// ID is the field whose value identifies the event (an S3 object's
	// ETag and key, say): two events with the same value start one run.
	// Empty means the message's or record's own identity.
	ID string `json:"id,omitempty"`
	// EventTime is the field holding when the event happened (RFC 3339,
	// or milliseconds since the epoch), kept in the run's trigger context.
	EventTime string `json:"event_time,omitempty"`
}

// External reports whether the trigger reads events from outside Sluice:
// a foreign subject or a feed.
func (t *Trigger) External() bool { return t != nil && (t.Subject != "" || t.Feed != nil) }

// Match is one condition of a trigger's filter on the text of a payload
// field (a string as it is, a number or a boolean as JSON writes it).
// Every condition set must hold.
type Match struct {
	Equals *string  `json:"equals,omitempty"`
	In     []string `json:"in,omitempty"`
	Prefix string   `json:"prefix,omitempty"`
	Suffix string   `json:"suffix,omitempty"`
	Regex  string   `json:"regex,omitempty"`
	// Exists false matches a field that is absent (or null).
	Exists *bool `json:"exists,omitempty"`
}

// ParamField says which payload field a run parameter takes its value
// from; with Regex, the regular expression's first group (or whole
// match) in the field's text.
type ParamField struct {
	Field string `json:"field"`
	Regex string `json:"regex,omitempty"`
}

// triggerFields are the fields of the trigger section; any other key
// names a connector kind whose events start runs (a feed).
var triggerFields = []string{"after", "subject", "filter", "params", "id", "event_time"}

func (p *parser) trigger(v *yaml.Node) *Trigger {
	out := &Trigger{}
	if v.Kind != yaml.MappingNode {
		p.add("trigger", v.Line, "must be a mapping (after, subject, or a connector kind with its settings; filter, params, id, event_time)")
		return out
	}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		field := "trigger." + k.Value
		switch k.Value {
		case "after":
			out.After = p.str(field, val)
			p.afterLine = val.Line
			if val.Kind == yaml.ScalarNode && !protocol.ValidName(out.After) {
				p.add(field, val.Line, fmt.Sprintf("%q is not a valid pipeline name: use lower-case letters, digits, '_' and '-', at most 63", out.After))
			}
		case "subject":
			out.Subject = p.str(field, val)
		case "id":
			out.ID = p.str(field, val)
		case "event_time":
			out.EventTime = p.str(field, val)
		case "filter":
			out.Filter = p.filter(val)
		case "params":
			out.Params = p.paramFields(val)
		default:
			if out.Feed != nil {
				p.add(field, k.Line, fmt.Sprintf("a trigger reads one feed: %s is named already", out.Feed.Kind))
				continue
			}
			if val.Kind != yaml.MappingNode {
				p.add(field, val.Line, fmt.Sprintf("unknown field (known: %s; or a connector kind whose events start runs, with its settings: <kind>: {...})", strings.Join(triggerFields, ", ")))
				continue
			}
			var x any
			if err := val.Decode(&x); err != nil {
				p.add(field, val.Line, err.Error())
				continue
			}
			cfg, err := json.Marshal(jsonable(x))
			if err != nil {
				p.add(field, val.Line, err.Error())
				continue
			}
			out.Feed = &protocol.Endpoint{Kind: k.Value, Config: cfg}
		}
	}
	if out.After == "" && out.Subject == "" && out.Feed == nil && len(v.Content) == 0 {
		p.add("trigger.after", v.Line, "is required (or subject, or a connector kind)")
	}
	return out
}

func (p *parser) filter(v *yaml.Node) map[string]Match {
	if v.Kind != yaml.MappingNode {
		p.add("trigger.filter", v.Line, "must be a mapping of payload fields to conditions")
		return nil
	}
	out := map[string]Match{}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		field := "trigger.filter." + k.Value
		if val.Kind == yaml.ScalarNode {
			s := val.Value
			out[k.Value] = Match{Equals: &s}
			continue
		}
		var m Match
		if val.Kind != yaml.MappingNode {
			p.add(field, val.Line, "must be a value or a mapping of conditions (equals, in, prefix, suffix, regex, exists)")
			continue
		}
		for j := 0; j+1 < len(val.Content); j += 2 {
			ck, cv := val.Content[j], val.Content[j+1]
			switch ck.Value {
			case "equals":
				s := p.str(field+".equals", cv)
				m.Equals = &s
			case "in":
				if err := cv.Decode(&m.In); err != nil || cv.Kind != yaml.SequenceNode {
					p.add(field+".in", cv.Line, "must be a list of values")
				}
			case "prefix":
				m.Prefix = p.str(field+".prefix", cv)
			case "suffix":
				m.Suffix = p.str(field+".suffix", cv)
			case "regex":
				m.Regex = p.str(field+".regex", cv)
			case "exists":
				b, err := strconv.ParseBool(cv.Value)
				if err != nil || cv.Kind != yaml.ScalarNode {
					p.add(field+".exists", cv.Line, "must be true or false")
				}
				m.Exists = &b
			default:
				p.add(field+"."+ck.Value, ck.Line, "unknown condition (known: equals, in, prefix, suffix, regex, exists)")
			}
		}
		out[k.Value] = m
	}
	return out
}

func (p *parser) paramFields(v *yaml.Node) map[string]ParamField {
	if v.Kind != yaml.MappingNode {
		p.add("trigger.params", v.Line, "must be a mapping of run parameters to payload fields")
		return nil
	}
	out := map[string]ParamField{}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		field := "trigger.params." + k.Value
		switch val.Kind {
		case yaml.ScalarNode:
			out[k.Value] = ParamField{Field: val.Value}
		case yaml.MappingNode:
			var pf ParamField
			for j := 0; j+1 < len(val.Content); j += 2 {
				ck, cv := val.Content[j], val.Content[j+1]
				switch ck.Value {
				case "field":
					pf.Field = p.str(field+".field", cv)
				case "regex":
					pf.Regex = p.str(field+".regex", cv)
				default:
					p.add(field+"."+ck.Value, ck.Line, "unknown field (known: field, regex)")
				}
			}
			out[k.Value] = pf
		default:
			p.add(field, val.Line, "must be a payload field, or {field, regex}")
		}
	}
	return out
}

// externalTriggerProblems checks a trigger reading events from outside
// Sluice: one source of events, a subject Sluice does not own, a feed the
// registry knows, field paths, conditions and regular expressions.
func (s Spec) externalTriggerProblems(lines lines, reg *connectors.Registry) []Problem {
	tr := s.Trigger
	if tr == nil {
		return nil
	}
	var out []Problem
	add := func(field, msg string) {
		out = append(out, Problem{Field: field, Line: lines.nearest(field), Msg: msg})
	}
	n := 0
	for _, set := range []bool{tr.After != "", tr.Subject != "", tr.Feed != nil} {
		if set {
			n++
		}
	}
	if n > 1 {
		add("trigger", "give one of after, subject or a connector kind: runs start on one kind of event")
	}
	if !tr.External() {
		if len(tr.Filter) > 0 || len(tr.Params) > 0 || tr.ID != "" || tr.EventTime != "" {
			add("trigger", "filter, params, id and event_time read the payloads of a subject's or a feed's events: give subject or a connector kind")
		}
		return out
	}
	if s.Streamed() {
		add("trigger", fmt.Sprintf("pipeline of pattern %s streams continuously: it has no runs to start", s.Pattern))
	}
	if tr.Subject != "" {
		if msg := subjectProblem(tr.Subject); msg != "" {
			add("trigger.subject", msg)
		}
	}
	if f := tr.Feed; f != nil {
		switch {
		case !reg.HasFeed(f.Kind):
			var kinds []string
			for _, k := range reg.Kinds() {
				if reg.HasFeed(k) {
					kinds = append(kinds, k)
				}
			}
			add("trigger."+f.Kind, fmt.Sprintf("unknown field: not one of %s, nor a connector kind whose events start runs (kinds that have them: %v)", strings.Join(triggerFields, ", "), kinds))
		default:
			if err := reg.ValidateFeed(f.Kind, f.Config); err != nil {
				var fe *connectors.FieldError
				field := "trigger." + f.Kind
				if errors.As(err, &fe) && fe.Field != "" {
					field += "." + fe.Field
				}
				msg := err.Error()
				if fe != nil {
					msg = fe.Msg
				}
				add(field, msg)
			}
		}
	}
	for _, name := range sortedKeys(tr.Filter) {
		m := tr.Filter[name]
		field := "trigger.filter." + name
		if msg := fieldPathProblem(name); msg != "" {
			add(field, msg)
		}
		if m.Regex != "" {
			if _, err := regexp.Compile(m.Regex); err != nil {
				add(field+".regex", err.Error())
			}
		}
	}
	for _, name := range sortedKeys(tr.Params) {
		pf := tr.Params[name]
		field := "trigger.params." + name
		if name == "" || strings.ContainsAny(name, " \t\n") {
			add(field, "a parameter's name is not empty and has no blanks")
		}
		if msg := fieldPathProblem(pf.Field); msg != "" {
			add(field, msg)
		}
		if pf.Regex != "" {
			if re, err := regexp.Compile(pf.Regex); err != nil {
				add(field+".regex", err.Error())
			} else if re.NumSubexp() > 1 {
				add(field+".regex", "has more than one group: the first group is the value")
			}
		}
	}
	for f, v := range map[string]string{"trigger.id": tr.ID, "trigger.event_time": tr.EventTime} {
		if v != "" {
			if msg := fieldPathProblem(v); msg != "" {
				add(f, msg)
			}
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// subjectProblem says what is wrong with a trigger's subject, "" when
// nothing: a valid NATS subject (wildcards allowed) outside Sluice's own
// subjects.
func subjectProblem(s string) string {
	if s == "" || strings.ContainsAny(s, " \t\r\n") || strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") || strings.Contains(s, "..") {
		return fmt.Sprintf("%q is not a NATS subject (tokens separated by '.', no blanks)", s)
	}
	toks := strings.Split(s, ".")
	for i, tok := range toks {
		if tok == ">" && i != len(toks)-1 || (strings.ContainsAny(tok, "*>") && len(tok) > 1) {
			return fmt.Sprintf("%q is not a NATS subject: '*' and '>' stand for whole tokens, '>' only last", s)
		}
	}
	if toks[0] == "sluice" || toks[0] == ">" || strings.HasPrefix(s, "$") || strings.HasPrefix(s, "_INBOX.") {
		return fmt.Sprintf("%q is a subject Sluice or NATS uses itself: a pipeline's own trigger subject is sluice.trigger.<name>; name another system's subject here", s)
	}
	return ""
}

// fieldPathProblem says what is wrong with a payload field path: names
// separated by '.', an array's elements by their index (Records.0.s3).
func fieldPathProblem(f string) string {
	if f == "" || strings.HasPrefix(f, ".") || strings.HasSuffix(f, ".") || strings.Contains(f, "..") {
		return fmt.Sprintf("%q is not a payload field (names separated by '.', array elements by index: Records.0.s3.object.key)", f)
	}
	return ""
}

// Event is what a trigger makes of one event's payload.
type Event struct {
	// Matched is false when the filter rejected the event.
	Matched bool
	// Params are the run's parameters; ID the event's identity from the
	// payload (empty without Trigger.ID); Time its event time (zero when
	// not given).
	Params map[string]string
	ID     string
	Time   time.Time
}

// Evaluate reads an event's payload (a JSON document of any shape): the
// filter, then the parameters, identity and event time. A payload the
// filter rejects is no error (Matched false). A payload that is not JSON,
// or lacks a field a parameter or the identity needs, is an error naming
// the field: the event is dead-lettered.
func (t *Trigger) Evaluate(payload []byte) (Event, error) {
	var ev Event
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return ev, fmt.Errorf("payload is not JSON: %v", err)
	}
	if dec.More() {
		return ev, errors.New("payload is not one JSON document")
	}
	for _, name := range sortedKeys(t.Filter) {
		v, ok := fieldText(doc, name)
		if !t.Filter[name].holds(v, ok) {
			return ev, nil
		}
	}
	ev.Matched = true
	for _, name := range sortedKeys(t.Params) {
		pf := t.Params[name]
		v, ok := fieldText(doc, pf.Field)
		if !ok {
			return ev, fmt.Errorf("params.%s: the payload has no field %s", name, pf.Field)
		}
		if pf.Regex != "" {
			re, err := regexp.Compile(pf.Regex)
			if err != nil {
				return ev, fmt.Errorf("params.%s: %v", name, err)
			}
			m := re.FindStringSubmatch(v)
			switch {
			case m == nil:
				return ev, fmt.Errorf("params.%s: %s %q does not match %s", name, pf.Field, v, pf.Regex)
			case len(m) > 1:
				v = m[1]
			default:
				v = m[0]
			}
		}
		if ev.Params == nil {
			ev.Params = map[string]string{}
		}
		ev.Params[name] = v
	}
	if t.ID != "" {
		v, ok := fieldText(doc, t.ID)
		if !ok || v == "" {
			return ev, fmt.Errorf("id: the payload has no field %s", t.ID)
		}
		ev.ID = v
	}
	if t.EventTime != "" {
		if v, ok := fieldText(doc, t.EventTime); ok {
			if tm, err := time.Parse(time.RFC3339Nano, v); err == nil {
				ev.Time = tm.UTC()
			} else if ms, err := strconv.ParseInt(v, 10, 64); err == nil {
				ev.Time = time.UnixMilli(ms).UTC()
			} else {
				return ev, fmt.Errorf("event_time: %s %q is not RFC 3339 or milliseconds since the epoch", t.EventTime, v)
			}
		}
	}
	return ev, nil
}

// holds reports whether a field's text v (present when ok) meets m.
func (m Match) holds(v string, ok bool) bool {
	if m.Exists != nil && *m.Exists != ok {
		return false
	}
	if !ok {
		return m.Exists != nil && !*m.Exists
	}
	if m.Equals != nil && v != *m.Equals {
		return false
	}
	if len(m.In) > 0 && !slices.Contains(m.In, v) {
		return false
	}
	if !strings.HasPrefix(v, m.Prefix) || !strings.HasSuffix(v, m.Suffix) {
		return false
	}
	if m.Regex != "" {
		re, err := regexp.Compile(m.Regex)
		if err != nil || !re.MatchString(v) {
			return false
		}
	}
	return true
}

// fieldText returns the text of the field at path in doc: a string as it
// is, any other value as its JSON; false when it is absent or null.
func fieldText(doc any, path string) (string, bool) {
	v := doc
	for tok := range strings.SplitSeq(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = x[tok]; !ok {
				return "", false
			}
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(x) {
				return "", false
			}
			v = x[i]
		default:
			return "", false
		}
	}
	switch x := v.(type) {
	case nil:
		return "", false
	case string:
		return x, true
	case json.Number:
		return x.String(), true
	case bool:
		return strconv.FormatBool(x), true
	}
	b, err := json.Marshal(v)
	return string(b), err == nil
}
