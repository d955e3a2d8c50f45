package connectors

import "encoding/json"

// The run parameters connectors take. A run's parameters come from a
// trigger, the command line or the HTTP API; most are only kept with the
// run (its trigger context). These few are read by the connectors that
// declare them (Connector.Params), and the coordinator leader checks them
// against the pipeline's source before it creates the run: a parameter
// cannot point a run outside what the spec configures.
const (
	// ParamFile names one file to read, relative to the source's path (a
	// files source).
	ParamFile = "file"
	// ParamPath names a directory under the source's path to read.
	ParamPath = "path"
	// ParamPartition names one partition: a time partition of a source
	// laid out by time (date=2026-11-25/hour=07, which gives the run its
	// window), or a partition number of a Kafka topic.
	ParamPartition = "partition"
	// ParamWindow is an incremental run's window, "<from>,<to>" in RFC
	// 3339, as sluice run --window takes it; the leader reads it.
	ParamWindow = "window"
)

// ParamsFunc checks the parameters a run gives a source of the given
// configuration, without I/O, and returns the window they name (a time
// partition), or nil. It judges only the parameters the kind takes (see
// ParamFile); a problem is a *FieldError whose Field is "params.<name>".
type ParamsFunc func(config json.RawMessage, params map[string]string) (*Window, error)

// CheckParams checks the parameters a run gives a source of kind (see
// ParamsFunc); a kind that takes none accepts any.
func (r *Registry) CheckParams(kind string, config json.RawMessage, params map[string]string) (*Window, error) {
	e, ok := r.kinds[kind]
	if !ok || e.params == nil || len(params) == 0 {
		return nil, nil
	}
	return e.params(config, params)
}
