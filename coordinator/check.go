package coordinator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/pipeline"
	"github.com/sluicehq/sluice/protocol"
)

// checkTimeout bounds the checks of one apply --check: connecting to the
// spec's source and sink and looking at what it names.
const checkTimeout = 20 * time.Second

// checkConnectors asks each connector of spec to check what its
// configuration names (`sluice apply --check`), in the roles the spec's
// pattern gives them, from this process: the `${ENV}` references are
// expanded from the coordinator's environment. found says what each check
// found, or that a kind has none. Problems come back as one
// *pipeline.Error naming the spec's fields and lines; a connector that
// could not be checked (its server did not answer) is a problem too.
func checkConnectors(ctx context.Context, reg *connectors.Registry, spec pipeline.Spec) (found []string, err error) {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	req := connectors.CheckRequest{Pipeline: spec.Name, Pattern: spec.RunPattern(), Settings: spec.StreamSettings()}
	if spec.Incremental != nil {
		req.DeltaColumn, req.DeltaValues = spec.Incremental.DeltaColumn, spec.Incremental.Values()
	}
	type side struct {
		name string
		e    protocol.Endpoint
		role connectors.Role
	}
	var sides []side
	switch spec.Pattern {
	case protocol.PatternCDC:
		sides = []side{{"source", spec.Source, connectors.RoleCDCSource}}
	case protocol.PatternCDCApply:
		sides = []side{{"sink", spec.Sink, connectors.RoleCDCTarget}}
	case protocol.PatternCompact:
		// The dataset a compact pipeline rewrites in place: its sink.
		sides = []side{{"dataset", spec.Sink, connectors.RoleSink}}
	case protocol.PatternPassthrough:
		sides = []side{{"source", spec.Source, connectors.RolePassthroughSource}, {"sink", spec.Sink, connectors.RolePassthroughSink}}
	default:
		sides = []side{{"source", spec.Source, connectors.RoleSource}, {"sink", spec.Sink, connectors.RoleSink}}
	}
	var problems []pipeline.Problem
	for _, s := range sides {
		what, checked, err := reg.Check(ctx, s.e.Kind, s.role, s.e.Config, req)
		switch {
		case err != nil:
			problems = append(problems, checkProblems(spec, s.name, err)...)
		case !checked:
			found = append(found, fmt.Sprintf("%s: the %s connector has no check", s.name, s.e.Kind))
		default:
			found = append(found, s.name+": "+what)
		}
	}
	if len(problems) > 0 {
		return found, &pipeline.Error{File: spec.Name, Problems: problems}
	}
	return found, nil
}

// checkProblems turns a connector's check error into problems naming the
// spec's fields.
func checkProblems(spec pipeline.Spec, side string, err error) []pipeline.Problem {
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	var out []pipeline.Problem
	for _, e := range errs {
		var fe *connectors.FieldError
		p := pipeline.Problem{Field: side, Msg: "could not check: " + e.Error()}
		if errors.As(e, &fe) {
			p.Field, p.Msg = side, fe.Msg
			switch {
			case fe.Field == connectors.FieldDeltaColumn:
				p.Field = fe.Field
			case fe.Field != "":
				p.Field = side + "." + fe.Field
			}
		}
		p.Line = spec.Line(p.Field)
		out = append(out, p)
	}
	return out
}
