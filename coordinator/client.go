package coordinator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// Errors an APIError matches with errors.Is, by its code.
var (
	// ErrNotFound: the pipeline or run asked for does not exist.
	ErrNotFound = errors.New("not found")
	// ErrInvalid: the request or the spec it carries is invalid.
	ErrInvalid = errors.New("invalid request")
	// ErrConflict: the request does not fit the pipeline's state now: a
	// live incremental run or a backfill of the pipeline is in flight.
	ErrConflict = errors.New("conflict")
)

// APIError is a control API reply that reports a failure.
type APIError struct {
	// Code is "invalid", "not_found", "conflict", "not_leader" or "internal".
	Code string
	// Msg is the leader's message; for an invalid spec it names each
	// field at fault.
	Msg string
}

func (e *APIError) Error() string { return e.Msg }

// Is makes errors.Is(err, ErrNotFound) and errors.Is(err, ErrInvalid) work.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Code == codeNotFound
	case ErrInvalid:
		return e.Code == codeInvalid
	case ErrConflict:
		return e.Code == codeConflict
	}
	return false
}

// Client calls the control API over NATS request/reply. It is safe for
// concurrent use.
type Client struct {
	nc *nats.Conn
	// attempt bounds one request; retry is the pause between requests
	// while no leader answers.
	attempt time.Duration
	retry   time.Duration
}

// NewClient returns a client on nc.
func NewClient(nc *nats.Conn) *Client {
	return &Client{nc: nc, attempt: 10 * time.Second, retry: 100 * time.Millisecond}
}

// call sends req to verb and decodes the reply into reply. While no leader
// answers (an election, no responders, a node stepping down) it retries
// until ctx ends.
func (c *Client) call(ctx context.Context, verb string, req, reply any, attempt time.Duration) error {
	data, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("%s: encode request: %w", verb, err)
	}
	wait := c.retry
	for {
		actx, cancel := context.WithTimeout(ctx, attempt)
		msg, err := c.nc.RequestWithContext(actx, protocol.APISubject(verb), data)
		cancel()
		if err == nil {
			var ae *APIError
			ae, err = decodeReply(msg.Data, reply)
			if err != nil {
				return fmt.Errorf("%s: %w", verb, err)
			}
			if ae == nil {
				return nil
			}
			if ae.Code != codeNotLeader {
				return ae
			}
			err = ae
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: no leader answered: %w (last: %v)", verb, ctx.Err(), err)
		}
		if !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, context.DeadlineExceeded) &&
			!errors.Is(err, nats.ErrTimeout) && !errors.As(err, new(*APIError)) {
			return fmt.Errorf("%s: %w", verb, err)
		}
		if !sleep(ctx, wait) {
			return fmt.Errorf("%s: no leader answered: %w (last: %v)", verb, ctx.Err(), err)
		}
		wait = min(wait*2, time.Second)
	}
}

// decodeReply decodes a reply: an APIError (it has a "code") or reply.
func decodeReply(data []byte, reply any) (*APIError, error) {
	var probe struct {
		Code  string `json:"code"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(data, &probe); err == nil && probe.Code != "" {
		return &APIError{Code: probe.Code, Msg: probe.Error}, nil
	}
	if err := json.Unmarshal(data, reply); err != nil {
		return nil, fmt.Errorf("decode reply: %w", err)
	}
	return nil, nil
}

// Apply stores or replaces a pipeline. An invalid spec gives an error
// matching ErrInvalid whose message names the fields at fault.
func (c *Client) Apply(ctx context.Context, spec pipeline.Spec) (protocol.ApplyReply, error) {
	return c.ApplyWith(ctx, spec, ApplyOptions{})
}

// ApplyOptions ask more of an apply than storing the spec.
type ApplyOptions struct {
	// Check has the leader connect to the spec's source and sink and check
	// what it names before storing it (see protocol.ApplyRequest).
	Check bool
	// DryRun stores nothing.
	DryRun bool
	// Along are the other pipelines of the same dry run (see
	// protocol.ApplyRequest).
	Along map[string]protocol.Pattern
}

// ApplyWith applies a spec as opts ask. A failed check gives an error
// matching ErrInvalid that names each problem.
func (c *Client) ApplyWith(ctx context.Context, spec pipeline.Spec, opts ApplyOptions) (protocol.ApplyReply, error) {
	var reply protocol.ApplyReply
	b, err := json.Marshal(spec)
	if err != nil {
		return reply, fmt.Errorf("apply: encode spec: %w", err)
	}
	attempt := c.attempt
	if opts.Check {
		attempt += checkTimeout // the leader connects to the source and sink
	}
	err = c.call(ctx, protocol.VerbApply, protocol.ApplyRequest{Spec: b, Check: opts.Check, DryRun: opts.DryRun, Along: opts.Along}, &reply, attempt)
	return reply, err
}

// Run starts a run and returns once it is planned. An empty RequestID is
// filled with a random one, so a request retried after a lost reply gives
// the same run. An unknown pipeline gives an error matching ErrNotFound.
func (c *Client) Run(ctx context.Context, req protocol.RunRequest) (protocol.RunReply, error) {
	var reply protocol.RunReply
	if req.RequestID == "" {
		req.RequestID = newRequestID()
	}
	err := c.call(ctx, protocol.VerbRun, req, &reply, planWait+c.attempt)
	return reply, err
}

// Backfill starts a backfill of an incremental pipeline and returns its
// status as started (windows already committed are marked skipped unless
// req.Replace). An empty RequestID is filled with a random one, so a
// request retried after a lost reply gives the same backfill. A backfill
// of the pipeline still running gives an error matching ErrConflict.
func (c *Client) Backfill(ctx context.Context, req protocol.BackfillRequest) (protocol.BackfillStatus, error) {
	var reply protocol.BackfillStatus
	if req.RequestID == "" {
		req.RequestID = newRequestID()
	}
	err := c.call(ctx, protocol.VerbBackfill, req, &reply, c.attempt)
	return reply, err
}

// Check compares an incremental pipeline's source and target window by
// window (see protocol.CheckRequest); with req.Repair it starts a backfill
// of the windows that differ, named in the reply.
func (c *Client) Check(ctx context.Context, req protocol.CheckRequest) (protocol.CheckReply, error) {
	var reply protocol.CheckReply
	err := c.call(ctx, protocol.VerbCheck, req, &reply, checkWait+c.attempt)
	return reply, err
}

// newRequestID returns a random request id.
func newRequestID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Rollback exposes an earlier kept version of a full_load pipeline's
// dataset again (see protocol.RollbackRequest) and returns what it
// exposed. An empty RequestID is filled with a random one, so a request
// retried after a lost reply rolls back once. A pipeline whose sink keeps
// no versions or whose pattern has none (incremental, streams), or a
// version not kept, gives an error matching ErrInvalid.
func (c *Client) Rollback(ctx context.Context, req protocol.RollbackRequest) (protocol.RollbackReply, error) {
	var reply protocol.RollbackReply
	if req.RequestID == "" {
		req.RequestID = newRequestID()
	}
	// The leader may wait for a commit of the pipeline to end first.
	err := c.call(ctx, protocol.VerbRollback, req, &reply, planWait+c.attempt)
	return reply, err
}

// GetPipeline returns a pipeline's status and its stored spec, `${ENV}`
// references unexpanded.
func (c *Client) GetPipeline(ctx context.Context, pipeline string) (protocol.PipelineGetReply, error) {
	var reply protocol.PipelineGetReply
	err := c.call(ctx, protocol.VerbPipelineGet, protocol.PipelineGetRequest{Pipeline: pipeline}, &reply, c.attempt)
	return reply, err
}

// GetBackfill returns one backfill with its windows.
func (c *Client) GetBackfill(ctx context.Context, id string) (protocol.BackfillStatus, error) {
	var reply protocol.BackfillStatus
	err := c.call(ctx, protocol.VerbBackfillGet, protocol.BackfillGetRequest{ID: id}, &reply, c.attempt)
	return reply, err
}

// WaitBackfill polls a backfill every interval until it is done and
// returns its last status; progress, when not nil, sees each poll. Failed
// windows are in the status, not in the error.
func (c *Client) WaitBackfill(ctx context.Context, id string, every time.Duration, progress func(protocol.BackfillStatus)) (protocol.BackfillStatus, error) {
	if every <= 0 {
		every = 500 * time.Millisecond
	}
	for {
		st, err := c.GetBackfill(ctx, id)
		if err != nil {
			return st, err
		}
		if progress != nil {
			progress(st)
		}
		if st.State == protocol.BackfillDone {
			return st, nil
		}
		if !sleep(ctx, every) {
			return st, fmt.Errorf("wait for backfill %s: %w", id, ctx.Err())
		}
	}
}

// Status describes the cluster, its pipelines and the newest runs.
func (c *Client) Status(ctx context.Context, req protocol.StatusRequest) (protocol.StatusReply, error) {
	var reply protocol.StatusReply
	err := c.call(ctx, protocol.VerbStatus, req, &reply, c.attempt)
	return reply, err
}

// CDCStatus lists the streams of the cdc and cdc_apply pipelines.
func (c *Client) CDCStatus(ctx context.Context) (protocol.CDCStatusReply, error) {
	var reply protocol.CDCStatusReply
	err := c.call(ctx, protocol.VerbCDCStatus, struct{}{}, &reply, c.attempt)
	return reply, err
}

// Resnapshot asks a cdc pipeline's reader for an incremental snapshot of
// one of its tables.
func (c *Client) Resnapshot(ctx context.Context, pipeline, table string) (protocol.ResnapshotReply, error) {
	var reply protocol.ResnapshotReply
	err := c.call(ctx, protocol.VerbCDCResnapshot, protocol.ResnapshotRequest{Pipeline: pipeline, Table: table}, &reply, c.attempt)
	return reply, err
}

// GetRun returns one run with its task list.
func (c *Client) GetRun(ctx context.Context, runID string) (protocol.RunStatus, error) {
	var reply protocol.RunStatus
	err := c.call(ctx, protocol.VerbRunStatus, protocol.RunGetRequest{RunID: runID}, &reply, c.attempt)
	return reply, err
}

// Delete deletes a pipeline (see protocol.DeleteRequest).
func (c *Client) Delete(ctx context.Context, pipeline string) (protocol.DeleteReply, error) {
	var reply protocol.DeleteReply
	err := c.call(ctx, protocol.VerbDelete, protocol.DeleteRequest{Pipeline: pipeline}, &reply, c.attempt)
	return reply, err
}

// Pipelines lists the pipelines.
func (c *Client) Pipelines(ctx context.Context) ([]protocol.PipelineStatus, error) {
	var reply []protocol.PipelineStatus
	err := c.call(ctx, protocol.VerbPipelines, struct{}{}, &reply, c.attempt)
	return reply, err
}

// WaitRun polls a run every interval until it is committed or failed and
// returns its last status; progress, when not nil, sees each poll. A failed
// run is returned with a nil error: its State and Error tell.
func (c *Client) WaitRun(ctx context.Context, runID string, every time.Duration, progress func(protocol.RunStatus)) (protocol.RunStatus, error) {
	if every <= 0 {
		every = 500 * time.Millisecond
	}
	for {
		st, err := c.GetRun(ctx, runID)
		if err != nil {
			return st, err
		}
		if progress != nil {
			progress(st)
		}
		if st.State == protocol.RunCommitted || st.State == protocol.RunFailed {
			return st, nil
		}
		if !sleep(ctx, every) {
			return st, fmt.Errorf("wait for run %s: %w", runID, ctx.Err())
		}
	}
}

// Compact starts a compaction of a pipeline's dataset (see
// protocol.CompactRequest) and returns once it is planned, with its
// groups; with DryRun it only plans it. An empty RequestID is filled with
// a random one, so a request retried after a lost reply gives the same
// run. A pipeline whose dataset cannot be compacted gives an error
// matching ErrInvalid.
func (c *Client) Compact(ctx context.Context, req protocol.CompactRequest) (protocol.CompactReply, error) {
	var reply protocol.CompactReply
	if req.RequestID == "" && !req.DryRun {
		req.RequestID = newRequestID()
	}
	err := c.call(ctx, protocol.VerbCompact, req, &reply, planWait+c.attempt)
	return reply, err
}

// Vacuum vacuums a pipeline's dataset (see protocol.VacuumRequest) and
// returns what it removed, or with DryRun would remove. The leader may
// take a while (listing a dataset, waiting for a commit of it to end): one
// request waits as long as ctx allows.
func (c *Client) Vacuum(ctx context.Context, req protocol.VacuumRequest) (protocol.VacuumReply, error) {
	var reply protocol.VacuumReply
	attempt := 10 * time.Minute
	if dl, ok := ctx.Deadline(); ok {
		attempt = time.Until(dl)
	}
	err := c.call(ctx, protocol.VerbVacuum, req, &reply, attempt)
	return reply, err
}
