package coordinator

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/protocol"
)

// PublishTrigger publishes a trigger for pipelineName on its subject
// through JetStream and returns the ack (its stream sequence; Duplicate
// when JetStream already had msgID). An empty msgID publishes without
// Nats-Msg-Id: the leader then keys the run on the stream sequence.
func PublishTrigger(ctx context.Context, js jetstream.JetStream, pipelineName string, tr protocol.Trigger, msgID string) (*jetstream.PubAck, error) {
	if !protocol.ValidName(pipelineName) {
		return nil, fmt.Errorf("trigger: %q is not a valid pipeline name", pipelineName)
	}
	tr.V = protocol.Version
	data, err := protocol.Encode(tr)
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg(protocol.TriggerSubject(pipelineName))
	m.Data = data
	if msgID != "" {
		m.Header.Set(protocol.HeaderMsgID, msgID)
	}
	ack, err := js.PublishMsg(ctx, m)
	if err != nil {
		return nil, fmt.Errorf("publish trigger of %s: %w", pipelineName, err)
	}
	return ack, nil
}

// DeadLetter is one record of SLUICE_DLQ.
type DeadLetter struct {
	Seq      uint64
	Subject  string
	Kind     string // "task" or "trigger"
	Pipeline string
	Reason   string
	Attempts int
	Time     time.Time
	Header   nats.Header
	Data     []byte
}

func deadLetterOf(raw *jetstream.RawStreamMsg) DeadLetter {
	d := DeadLetter{Seq: raw.Sequence, Subject: raw.Subject, Time: raw.Time, Header: raw.Header, Data: raw.Data}
	d.Kind, d.Pipeline, _ = protocol.DLQKind(raw.Subject)
	if raw.Header != nil {
		d.Reason = raw.Header.Get(protocol.HeaderReason)
		d.Attempts, _ = strconv.Atoi(raw.Header.Get(protocol.HeaderAttempts))
	}
	return d
}

// ListDLQ returns the dead letters, oldest first, at most limit (0: all).
func ListDLQ(ctx context.Context, js jetstream.JetStream, limit int) ([]DeadLetter, error) {
	s, err := js.Stream(ctx, protocol.StreamDLQ)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", protocol.StreamDLQ, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s info: %w", protocol.StreamDLQ, err)
	}
	var out []DeadLetter
	if info.State.Msgs == 0 {
		return out, nil
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		if limit > 0 && len(out) == limit {
			break
		}
		raw, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("get dead letter %d: %w", seq, err)
		}
		out = append(out, deadLetterOf(raw))
	}
	return out, nil
}

// GetDLQ returns one dead letter.
func GetDLQ(ctx context.Context, js jetstream.JetStream, seq uint64) (DeadLetter, error) {
	s, err := js.Stream(ctx, protocol.StreamDLQ)
	if err != nil {
		return DeadLetter{}, fmt.Errorf("open %s: %w", protocol.StreamDLQ, err)
	}
	raw, err := s.GetMsg(ctx, seq)
	if err != nil {
		return DeadLetter{}, fmt.Errorf("dead letter %d: %w", seq, err)
	}
	return deadLetterOf(raw), nil
}

// Replayed tells what a replay did: a trigger re-published (Subject and
// its new stream sequence) or a new run started for a dead task.
type Replayed struct {
	Subject string
	Seq     uint64
	MsgID   string
	Run     protocol.RunReply
}

// ReplayDLQ replays dead letter seq. A trigger is published again on its
// original subject with its payload and headers and the msg id
// "replay:<seq>" (replaying the same dead letter twice starts one run). A
// dead task starts a new run of its pipeline with the task's parameters
// and logical time (request id "dlq-replay:<seq>"): the run plans its tasks
// again, since a task alone cannot be committed outside its run. The dead
// letter stays; purge it when done.
func ReplayDLQ(ctx context.Context, js jetstream.JetStream, client *Client, seq uint64) (Replayed, error) {
	d, err := GetDLQ(ctx, js, seq)
	if err != nil {
		return Replayed{}, err
	}
	switch d.Kind {
	case "trigger":
		subject := d.Header.Get(protocol.HeaderOrigSubject)
		if subject == "" {
			subject = protocol.TriggerSubject(d.Pipeline)
		}
		m := nats.NewMsg(subject)
		m.Data = d.Data
		m.Header = maps.Clone(d.Header)
		for _, k := range []string{protocol.HeaderReason, protocol.HeaderAttempts, protocol.HeaderOrigSubject,
			protocol.HeaderOrigSeq, protocol.HeaderOrigMsgID, protocol.HeaderTraceID} {
			m.Header.Del(k)
		}
		msgID := "replay:" + strconv.FormatUint(seq, 10)
		m.Header.Set(protocol.HeaderMsgID, msgID)
		ack, err := js.PublishMsg(ctx, m)
		if err != nil {
			return Replayed{}, fmt.Errorf("replay dead letter %d to %s: %w", seq, subject, err)
		}
		return Replayed{Subject: subject, Seq: ack.Sequence, MsgID: msgID}, nil
	case "task":
		task, err := protocol.Decode[protocol.Task](d.Data)
		if err != nil {
			return Replayed{}, fmt.Errorf("dead letter %d: decode task: %w", seq, err)
		}
		if client == nil {
			return Replayed{}, errors.New("replay a task: no control API client")
		}
		res, err := client.Run(ctx, protocol.RunRequest{Pipeline: task.Pipeline, Params: task.Params,
			LogicalTime: task.LogicalTime, RequestID: "dlq-replay:" + strconv.FormatUint(seq, 10)})
		if err != nil {
			return Replayed{}, fmt.Errorf("replay dead task %d as a new run of %s: %w", seq, task.Pipeline, err)
		}
		return Replayed{Run: res}, nil
	}
	return Replayed{}, fmt.Errorf("dead letter %d on %s: unknown kind %q", seq, d.Subject, d.Kind)
}

// PurgeDLQ deletes dead letter seq, or every dead letter when seq is 0.
func PurgeDLQ(ctx context.Context, js jetstream.JetStream, seq uint64) error {
	s, err := js.Stream(ctx, protocol.StreamDLQ)
	if err != nil {
		return fmt.Errorf("open %s: %w", protocol.StreamDLQ, err)
	}
	if seq == 0 {
		return s.Purge(ctx)
	}
	if err := s.DeleteMsg(ctx, seq); err != nil {
		return fmt.Errorf("delete dead letter %d: %w", seq, err)
	}
	return nil
}
