package pgcdc

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/protocol"
)

// SourceConfig is the source of a cdc pipeline, the postgres kind as a cdc
// source (connectors.CDCSource): the database and the captured tables. The
// slot, the publication and the other stream settings come from the
// pipeline's cdc section (connectors.StreamSettings).
type SourceConfig struct {
	// DSN of the source database (see Config.DSN).
	DSN string `json:"dsn"`
	// Tables lists the captured tables as "schema.table".
	Tables []string `json:"tables"`
}

// Validate checks the configuration without I/O. Errors are
// *connectors.FieldError naming the field.
func (c SourceConfig) Validate() error {
	if err := validateDSN(c.DSN); err != nil {
		return err
	}
	if len(c.Tables) == 0 {
		return &connectors.FieldError{Field: "tables", Msg: "at least one table is required: the captured tables, as schema.table"}
	}
	seen := map[string]bool{}
	for i, t := range c.Tables {
		f := fmt.Sprintf("tables[%d]", i)
		if _, _, err := splitTable(t); err != nil {
			return &connectors.FieldError{Field: f, Msg: err.Error()}
		}
		if seen[t] {
			return &connectors.FieldError{Field: f, Msg: fmt.Sprintf("table %q is listed twice", t)}
		}
		seen[t] = true
	}
	return nil
}

// ParseSourceConfig decodes and validates the source configuration of a
// cdc pipeline; unknown fields are errors.
func ParseSourceConfig(config json.RawMessage) (SourceConfig, error) {
	var c SourceConfig
	if err := decodeStrict(config, &c); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// ValidateSource checks the source configuration of a cdc pipeline without
// I/O.
func ValidateSource(config json.RawMessage) error {
	_, err := ParseSourceConfig(config)
	return err
}

// snapshotEndpoints says how the initial snapshot run of a cdc pipeline is
// made (connectors.CDCSource.Snapshot): the SnapshotKind source creates the
// slot with an exported snapshot and plans the tables' chunks on it, and
// the EventsKind sink publishes each row as a read event. The DSN stays as
// the spec has it: its ${ENV} references are expanded where the endpoints
// are opened. A slot left behind by an earlier attempt is replaced: the
// pipeline has not streamed yet.
func snapshotEndpoints(req connectors.SnapshotRequest) (connectors.SnapshotEndpoints, error) {
	var src SourceConfig
	if err := json.Unmarshal(req.Config, &src); err != nil {
		return connectors.SnapshotEndpoints{}, fmt.Errorf("cdc source: %w", err)
	}
	sc, err := json.Marshal(SnapshotConfig{
		DSN: src.DSN, Tables: src.Tables, Slot: req.Settings.Slot, Publication: req.Settings.Publication,
		TargetRows: int(req.Settings.TargetRows), ReplaceSlot: true,
	})
	if err != nil {
		return connectors.SnapshotEndpoints{}, err
	}
	kc, err := json.Marshal(EventsConfig{Pipeline: req.Pipeline, Slot: req.Settings.Slot, MessageEvents: req.Settings.MessageEvents})
	if err != nil {
		return connectors.SnapshotEndpoints{}, err
	}
	return connectors.SnapshotEndpoints{
		Source: protocol.Endpoint{Kind: SnapshotKind, Config: sc},
		Sink:   protocol.Endpoint{Kind: EventsKind, Config: kc},
	}, nil
}

// sourceTables lists the tables of a cdc pipeline's source configuration
// (connectors.CDCSource.Tables).
func sourceTables(config json.RawMessage) ([]string, error) {
	var src SourceConfig
	if err := json.Unmarshal(config, &src); err != nil {
		return nil, fmt.Errorf("cdc source: %w", err)
	}
	return src.Tables, nil
}

// openReader opens the change reader of a cdc pipeline
// (connectors.CDCSource.Open): a Reader of the pipeline's slot publishing
// through the worker's JetStream context. SLUICE_CDC is the coordinator
// leader's to create (EnsureStream), with the cluster's replicas.
func openReader(_ context.Context, req connectors.StreamRequest) (connectors.Stream, error) {
	src, err := ParseSourceConfig(req.Config)
	if err != nil {
		return nil, err
	}
	cfg := Config{
		DSN: src.DSN, Slot: req.Settings.Slot, Publication: req.Settings.Publication, Tables: src.Tables,
		Pipeline: req.Pipeline, Heartbeat: req.Settings.Heartbeat, MessageEvents: req.Settings.MessageEvents,
		Snapshots: req.Settings.Snapshots, ChunkRows: req.Settings.SnapshotChunkRows, MaxLagBytes: req.Settings.MaxLagBytes,
		Trace: req.Trace,
	}
	if cfg.Contract, err = openContract(req.Contract); err != nil {
		return nil, err
	}
	log := req.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r, err := NewReader(cfg, req.JS, log)
	if err != nil {
		return nil, err
	}
	return &readerStream{r: r, dsn: src.DSN, slot: cfg.Slot, log: log}, nil
}

// lagEvery bounds how often a readerStream asks the server for its slot's
// lag in bytes.
const lagEvery = 2 * time.Second

// readerStream is the stream of a cdc pipeline: its Reader, with the slot's
// lag in its status.
type readerStream struct {
	r    *Reader
	dsn  string
	slot string
	log  *slog.Logger

	mu    sync.Mutex
	lag   Lag
	lagAt time.Time
}

func (s *readerStream) Run(ctx context.Context) error { return s.r.Run(ctx) }

// Status reports the slot's progress and its lag: in bytes as the server
// counts it (asked at most every lagEvery), in time as the age of what was
// received but is not confirmed yet.
func (s *readerStream) Status(ctx context.Context) protocol.StreamStatus {
	st := s.r.Status()
	out := protocol.StreamStatus{
		State: protocol.StreamStreaming, ConfirmedLSN: st.ConfirmedLSN, ReceivedLSN: st.ReceivedLSN,
		LastCommit: st.AckedCommitTime, Events: st.Events, Time: time.Now().UTC(), Tables: st.Snapshots,
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Since(s.lagAt) > lagEvery {
		lag, err := SlotLag(ctx, s.dsn, s.slot)
		if err != nil {
			s.log.Debug("slot lag", "err", err)
		} else {
			s.lag, s.lagAt = lag, time.Now()
		}
	}
	out.LagBytes, out.SourceLSN, out.LagAt = s.lag.Bytes, s.lag.CurrentLSN, s.lagAt.UTC()
	if !st.OldestPending.IsZero() {
		out.LagTime = time.Since(st.OldestPending)
	}
	return out
}
