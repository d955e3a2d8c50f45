package protocol

import (
	"encoding/json"
	"time"
)

// The control API is request/reply over NATS on sluice.api.<verb>, served by
// the coordinator leader only. Requests and replies are JSON. A reply that
// failed is an APIError.

// API verbs.
const (
	VerbApply     = "apply"
	VerbRun       = "run"
	VerbStatus    = "status"
	VerbRunStatus = "run.get"
	VerbPipelines = "pipelines"
)

// APIError is the reply of a request that failed.
type APIError struct {
	Error string `json:"error"`
	// Code is a short machine-readable reason: "invalid", "not_found",
	// "not_leader", "internal".
	Code string `json:"code"`
}

// ApplyRequest stores or replaces a pipeline. Spec is the pipeline spec as
// JSON (the coordinator validates it again).
type ApplyRequest struct {
	Spec json.RawMessage `json:"spec"`
}

// ApplyReply tells what was stored.
type ApplyReply struct {
	Pipeline string `json:"pipeline"`
	// Revision counts how many times the pipeline was applied.
	Revision int64 `json:"revision"`
	Created  bool  `json:"created"`
}

// RunRequest asks for a run of a pipeline now.
type RunRequest struct {
	Pipeline    string            `json:"pipeline"`
	Params      map[string]string `json:"params,omitempty"`
	LogicalTime time.Time         `json:"logical_time,omitzero"`
	// RequestID makes the request idempotent: the same id gives the same run.
	RequestID string `json:"request_id,omitempty"`
}

// RunReply names the run that was started.
type RunReply struct {
	RunID string `json:"run"`
	Tasks int    `json:"tasks"`
}

// StatusRequest filters a status reply; empty fields mean all.
type StatusRequest struct {
	Pipeline string `json:"pipeline,omitempty"`
	// Limit caps the number of runs listed, newest first (default 20).
	Limit int `json:"limit,omitempty"`
}

// StatusReply describes the cluster.
type StatusReply struct {
	Leader    string           `json:"leader"`
	Nodes     []NodeStatus     `json:"nodes,omitempty"`
	Pipelines []PipelineStatus `json:"pipelines"`
	Runs      []RunStatus      `json:"runs"`
	Workers   []Heartbeat      `json:"workers"`
}

// NodeStatus is one coordinator in the Raft configuration.
type NodeStatus struct {
	ID       string `json:"id"`
	Address  string `json:"address"`
	Suffrage string `json:"suffrage"`
	Leader   bool   `json:"leader"`
}

// PipelineStatus is one pipeline.
type PipelineStatus struct {
	Name     string  `json:"name"`
	Pattern  Pattern `json:"pattern"`
	Revision int64   `json:"revision"`
	Schedule string  `json:"schedule,omitempty"`
	// Version is the dataset version currently exposed (0 before any).
	Version   int64  `json:"version"`
	LastRun   string `json:"last_run,omitempty"`
	Watermark string `json:"watermark,omitempty"`
}

// Run states.
const (
	RunPlanning   = "planning"
	RunRunning    = "running"
	RunCommitting = "committing"
	RunCommitted  = "committed"
	RunFailed     = "failed"
)

// Task states.
const (
	TaskPending   = "pending"
	TaskSucceeded = "succeeded"
	TaskFailed    = "failed"
)

// RunStatus is one run.
type RunStatus struct {
	RunID    string `json:"run"`
	Pipeline string `json:"pipeline"`
	State    string `json:"state"`
	Tasks    int    `json:"tasks"`
	// TasksDone counts succeeded tasks, TasksFailed dead ones.
	TasksDone   int       `json:"tasks_done"`
	TasksFailed int       `json:"tasks_failed"`
	Rows        int64     `json:"rows"`
	Bytes       int64     `json:"bytes"`
	Checksum    string    `json:"checksum,omitempty"`
	Version     int64     `json:"version,omitempty"`
	Location    string    `json:"location,omitempty"`
	Marker      string    `json:"marker,omitempty"`
	Error       string    `json:"error,omitempty"`
	TraceID     string    `json:"trace_id,omitempty"`
	Created     time.Time `json:"created"`
	Finished    time.Time `json:"finished,omitzero"`
	// TaskList is filled by run.get only.
	TaskList []TaskStatus `json:"task_list,omitempty"`
}

// TaskStatus is one task of a run.
type TaskStatus struct {
	TaskID    string `json:"task"`
	Partition string `json:"partition"`
	State     string `json:"state"`
	Attempts  int    `json:"attempts"`
	Worker    string `json:"worker,omitempty"`
	Rows      int64  `json:"rows"`
	Bytes     int64  `json:"bytes"`
	Error     string `json:"error,omitempty"`
}

// RunGetRequest asks for one run with its tasks.
type RunGetRequest struct {
	RunID string `json:"run"`
}
