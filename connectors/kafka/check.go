package kafka

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/sluicehq/sluice/connectors"
)

// Check says what the source's topic holds (connectors.Checker): its
// partitions and records, and that a pipeline read by windows names the
// column carrying the records' timestamps.
func (s *Source) Check(ctx context.Context, req connectors.CheckRequest) (string, error) {
	info, err := describeTopic(ctx, s.adm, s.cfg.Topic)
	if connectors.IsPermanent(err) {
		return "", &connectors.FieldError{Field: "topic", Msg: err.Error()}
	}
	if err != nil {
		return "", err
	}
	starts, err := s.listOffsets(ctx, "start", func() (kadm.ListedOffsets, error) { return s.adm.ListStartOffsets(ctx, s.cfg.Topic) })
	if err != nil {
		return "", err
	}
	ends, err := s.listOffsets(ctx, "end", func() (kadm.ListedOffsets, error) { return s.adm.ListEndOffsets(ctx, s.cfg.Topic) })
	if err != nil {
		return "", err
	}
	var n int64
	for _, p := range info.partitions {
		n += ends[p] - starts[p]
	}
	if req.DeltaColumn != "" && req.DeltaColumn != s.cfg.timestampColumn() {
		return "", &connectors.FieldError{Field: connectors.FieldDeltaColumn,
			Msg: fmt.Sprintf("%q does not carry the records' timestamps: a kafka source is read by windows of them (%s)", req.DeltaColumn, timestampHint(s.cfg))}
	}
	return fmt.Sprintf("topic %s: %d partitions, about %d records", s.cfg.Topic, len(info.partitions), n), nil
}

// Check says whether the sink's topic exists, or will be created, and
// its staging topic (connectors.Checker).
func (s *Sink) Check(ctx context.Context, req connectors.CheckRequest) (string, error) {
	found := ""
	info, err := describeTopic(ctx, s.adm, s.cfg.Topic)
	switch {
	case err == nil:
		found = fmt.Sprintf("topic %s: %d partitions", s.cfg.Topic, len(info.partitions))
	case connectors.IsPermanent(err) && s.cfg.Partitions > 0:
		found = fmt.Sprintf("topic %s: created with %d partitions by the first task", s.cfg.Topic, s.cfg.Partitions)
	case connectors.IsPermanent(err):
		return "", &connectors.FieldError{Field: "topic", Msg: err.Error() + " (set partitions to have the sink create it)"}
	default:
		return "", err
	}
	if req.Role == connectors.RolePassthroughSink {
		// A passthrough's tasks write straight into the topic, in
		// transactions of their own: it stages nothing.
		return found, nil
	}
	staging := s.cfg.stagingTopic()
	if si, err := describeTopic(ctx, s.adm, staging); err == nil {
		found += fmt.Sprintf("; staging topic %s: %d partitions", staging, len(si.partitions))
	} else if !errors.Is(err, context.Canceled) {
		found += fmt.Sprintf("; staging topic %s: created by the first task", staging)
	}
	return found, nil
}
